//! patch-kustomize run for real against the harness's git server: an infra repository with a base,
//! an integration environment and the sandbox's branch.

mod common;

use common::{all_succeed_at_once, git, text};

use std::path::Path;
use std::process::Command;

use serde_yaml::Value;
use testkit::GitServer;

const TOKEN: &str = "tok-infra";
const SANDBOX: &str = "kustomize/environments/sandbox/kustomization.yaml";
const INTEGRATION: &str = "kustomize/environments/integration/kustomization.yaml";

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
        image: registry.example.com/acme/api:0.1.0
      - name: web
        image: registry.example.com/acme/web:0.1.0
";

const INTEGRATION_KUSTOMIZATION: &str = "\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: apps-integration
resources:
  - ../../base
images:
  - name: registry.example.com/acme/api
    newTag: 1.4.2
  - name: registry.example.com/acme/web
    newName: mirror.example.com/acme/web
    digest: sha256:2222222222222222222222222222222222222222222222222222222222222222
";

const SANDBOX_KUSTOMIZATION: &str = "\
# The sandbox overlay: create-sandbox patches namespace, images and config per pull request.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: apps-sandbox   # replaced per sandbox
bases:
  - ../../base   # `bases:` for Debian's kustomize 2.0.3 (newer ones take it too)
images:
  - name: registry.example.com/acme/api
    newTag: latest
configMapGenerator:
  - name: app-config
    literals:
      - DB_NAME=sandbox   # the sandbox database
      - LOG_LEVEL=debug
";

/// The infra repository, with the sandbox's branch made from main.
fn infra() -> (GitServer, String) {
    let server = GitServer::start(TOKEN);
    let url = server.create_repo(
        "infra",
        &[
            (
                "kustomize/base/kustomization.yaml",
                "resources:\n- deployment.yaml\n",
            ),
            ("kustomize/base/deployment.yaml", DEPLOYMENT),
            (INTEGRATION, INTEGRATION_KUSTOMIZATION),
            (SANDBOX, SANDBOX_KUSTOMIZATION),
            (
                "kustomize/environments/other/kustomization.yaml",
                "resources:\n  - ../../base\n",
            ),
            (
                "broken/kustomization.yaml",
                "images:\n  - name: api\n   newTag: [oops\n",
            ),
        ],
    );
    for branch in ["sbx-pr-42", "integration"] {
        git(&server, &["branch", branch, "main"]);
    }
    (server, url)
}

fn step(outputs: &Path, url: &str) -> Command {
    step_on(outputs, url, "sbx-pr-42")
}

fn step_on(outputs: &Path, url: &str, branch: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_patch-kustomize"));
    cmd.env_clear()
        .env("SBX_OUTPUTS_DIR", outputs)
        .env("T", TOKEN)
        .args(["--repo", url, "--git-token", "env:T", "--branch", branch]);
    cmd
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap()
}

/// Renders the sandbox overlay of `branch` with a real kustomize; returns its documents.
fn render(server: &GitServer, branch: &str) -> Vec<Value> {
    let tree = common::tree(server, branch);
    common::kustomize(&tree.path().join("kustomize/environments/sandbox"), branch)
}

#[test]
fn patches_the_sandbox_overlay_losslessly_and_it_renders() {
    let (server, url) = infra();
    let dir = tempfile::tempdir().unwrap();
    let out = step(dir.path(), &url)
        .args(["--file", SANDBOX, "--namespace", "apps-sbx-pr-42"])
        .args(["--images-from", &format!("integration:{INTEGRATION}")])
        .args(["--set-image", "registry.example.com/acme/api=:pr-42"])
        .args(["--set-literal", "app-config/DB_NAME=sbx_pr_42"])
        .args(["--set-literal", "app-config/SANDBOX=sbx-pr-42"])
        .args(["--set-label", "sandbox-steps.io/environment=sbx-pr-42"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(read(dir.path(), "changed"), "true");
    let commit = read(dir.path(), "commit");
    assert_eq!(
        server.rev_parse("infra", "refs/heads/sbx-pr-42"),
        Some(commit.clone())
    );
    assert_eq!(
        server.rev_parse("infra", "refs/heads/main"),
        server.rev_parse("infra", "refs/heads/integration"),
        "only the sandbox branch moved"
    );

    // The commit touches only the changed values' lines (and adds the new ones).
    let diff = git(&server, &["diff", "--unified=0", "main", "sbx-pr-42"]);
    let changed: Vec<&str> = diff
        .lines()
        .filter(|l| {
            (l.starts_with('-') || l.starts_with('+'))
                && !l.starts_with("---")
                && !l.starts_with("+++")
        })
        .collect();
    assert_eq!(
        changed,
        [
            "-namespace: apps-sandbox   # replaced per sandbox",
            "+namespace: apps-sbx-pr-42   # replaced per sandbox",
            "-    newTag: latest",
            "+    newTag: pr-42",
            "+  - name: registry.example.com/acme/web",
            "+    newName: mirror.example.com/acme/web",
            "+    digest: sha256:2222222222222222222222222222222222222222222222222222222222222222",
            "-      - DB_NAME=sandbox   # the sandbox database",
            "+      - DB_NAME=sbx_pr_42   # the sandbox database",
            "+      - SANDBOX=sbx-pr-42",
            "+commonLabels:",
            "+  sandbox-steps.io/environment: sbx-pr-42",
        ],
        "{diff}"
    );

    let docs = render(&server, "sbx-pr-42");
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    assert_eq!(deployment["metadata"]["namespace"], "apps-sbx-pr-42");
    let images: Vec<&str> = deployment["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|c| c["image"].as_str().unwrap())
        .collect();
    assert_eq!(
        images,
        [
            "registry.example.com/acme/api:pr-42",
            "mirror.example.com/acme/web@sha256:2222222222222222222222222222222222222222222222222222222222222222",
        ]
    );
    let config = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    assert_eq!(config["data"]["DB_NAME"], "sbx_pr_42");
    assert_eq!(config["metadata"]["namespace"], "apps-sbx-pr-42");
    assert_eq!(
        deployment["metadata"]["labels"]["sandbox-steps.io/environment"],
        "sbx-pr-42"
    );

    // The same flags again: nothing to commit.
    let again = tempfile::tempdir().unwrap();
    let out = step(again.path(), &url)
        .args(["--file", SANDBOX, "--namespace", "apps-sbx-pr-42"])
        .args(["--images-from", &format!("integration:{INTEGRATION}")])
        .args(["--set-image", "registry.example.com/acme/api=:pr-42"])
        .args(["--set-literal", "app-config/DB_NAME=sbx_pr_42"])
        .args(["--set-literal", "app-config/SANDBOX=sbx-pr-42"])
        .args(["--set-label", "sandbox-steps.io/environment=sbx-pr-42"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        (read(again.path(), "changed"), read(again.path(), "commit")),
        ("false".into(), commit)
    );
}

#[test]
fn two_runs_on_different_files_of_one_branch_both_land() {
    let (server, url) = infra();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let files = [SANDBOX, "kustomize/environments/other/kustomization.yaml"];
    all_succeed_at_once(
        dirs.iter()
            .zip(files)
            .map(|(d, file)| {
                let mut cmd = step(d.path(), &url);
                cmd.args(["--file", file, "--namespace", "apps-sbx-pr-42"]);
                cmd
            })
            .collect(),
    );
    for file in files {
        let content = git(&server, &["show", &format!("sbx-pr-42:{file}")]);
        assert!(
            content.contains("namespace: apps-sbx-pr-42"),
            "{file}:\n{content}"
        );
    }
}

#[test]
fn missing_file_is_a_precondition_and_malformed_yaml_is_invalid() {
    let (server, url) = infra();
    let before = server.rev_parse("infra", "refs/heads/sbx-pr-42");
    let dir = tempfile::tempdir().unwrap();

    let out = step(dir.path(), &url)
        .args([
            "--file",
            "kustomize/environments/nope/kustomization.yaml",
            "--namespace",
            "x",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("does not exist"), "{}", text(&out));

    let out = step(dir.path(), &url)
        .args(["--file", "broken/kustomization.yaml", "--namespace", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("line 3, column"), "{}", text(&out));

    let out = step(dir.path(), &url)
        .args(["--file", SANDBOX, "--images-from", "integration:nope.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));

    let out = step_on(dir.path(), &url, "sbx-pr-missing")
        .args(["--file", SANDBOX, "--namespace", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));

    assert_eq!(
        server.rev_parse("infra", "refs/heads/sbx-pr-42"),
        before,
        "nothing pushed"
    );
}

#[test]
fn bad_input_pushes_nothing() {
    let (server, url) = infra();
    let before = server.rev_parse("infra", "refs/heads/sbx-pr-42");
    let dir = tempfile::tempdir().unwrap();
    let long = "a".repeat(200);
    let cases: &[&[&str]] = &[
        &[
            "--file",
            SANDBOX,
            "--set-image",
            "registry.example.com/acme/api",
        ],
        &["--file", SANDBOX, "--set-image", "api=acme/API:v1"],
        &["--file", SANDBOX, "--set-image", "api=:v1;rm -rf /"],
        &["--file", SANDBOX, "--set-image", "api=acme/api@sha256:abc"],
        &["--file", SANDBOX, "--set-label", "bad key/x=y"],
        &["--file", SANDBOX, "--set-label", "team"],
        &["--file", SANDBOX, "--set-label", &format!("team={long}")],
        &["--file", SANDBOX, "--set-literal", "app-config/KEY"],
        &["--file", SANDBOX, "--set-literal", "app config/KEY=v"],
        &["--file", SANDBOX, "--set-literal", "app-config/KEY=a\nb"],
        &["--file", SANDBOX, "--namespace", "Apps_Sbx"],
        &["--file", SANDBOX, "--namespace", "ünïcode"],
        &["--file", SANDBOX, "--images-from", "integration"],
        &[
            "--file",
            SANDBOX,
            "--images-from",
            "../x:kustomization.yaml",
        ],
        &["--file", "../kustomization.yaml", "--namespace", "x"],
        &["--file", "/etc/kustomization.yaml", "--namespace", "x"],
        &["--file", "a/../../kustomization.yaml", "--namespace", "x"],
        &["--file", SANDBOX],
    ];
    for args in cases {
        let out = step(dir.path(), &url).args(*args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
    }
    // 200 characters is a valid (missing) branch: exit 3 like any missing branch; 300 is not.
    let too_long = "b".repeat(300);
    for branch in [
        "main;rm -rf /",
        "../x",
        "feature/ünïcode\u{202e}",
        &too_long,
    ] {
        let out = step_on(dir.path(), &url, branch)
            .args(["--file", SANDBOX, "--namespace", "x"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{branch:?}: {}", text(&out));
    }
    assert_eq!(server.rev_parse("infra", "refs/heads/sbx-pr-42"), before);
    let pushes = server
        .requests()
        .iter()
        .filter(|r| r.path.contains("receive-pack"))
        .count();
    assert_eq!(pushes, 0, "no push attempted");
}

/// main, master, `--protected-branches` and the remote's default branch are never committed to
/// (exit 3, nothing pushed), whatever the flags ask: the environment branches are the only target.
#[test]
fn protected_branches_are_refused_and_nothing_is_pushed() {
    let (server, url) = infra();
    // The remote's default branch: HEAD points at `integration` here.
    git(&server, &["symbolic-ref", "HEAD", "refs/heads/integration"]);
    git(&server, &["branch", "release-1", "main"]);
    git(&server, &["branch", "master", "main"]);
    let dir = tempfile::tempdir().unwrap();
    let refs = |server: &GitServer| {
        ["main", "master", "integration", "release-1"]
            .map(|b| server.rev_parse("infra", &format!("refs/heads/{b}")))
    };
    let before = refs(&server);
    for (branch, extra) in [
        ("main", &[][..]),
        ("master", &[][..]),
        ("integration", &[][..]),
        ("release-1", &["--protected-branches", "release-*"][..]),
        // A dry run is refused the same way: it says what a real run would do.
        ("main", &["--dry-run"][..]),
    ] {
        let out = step_on(dir.path(), &url, branch)
            .args(["--file", SANDBOX, "--namespace", "apps-sbx-pr-42"])
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(3),
            "{branch} {extra:?}: {}",
            text(&out)
        );
        assert!(text(&out).contains("refusing to commit"), "{}", text(&out));
    }
    assert_eq!(refs(&server), before);
    let pushes = server
        .requests()
        .iter()
        .filter(|r| r.path.contains("receive-pack"))
        .count();
    assert_eq!(pushes, 0, "no push attempted");
}

#[test]
fn dry_run_shows_the_diff_and_pushes_nothing() {
    let (server, url) = infra();
    let before = server.rev_parse("infra", "refs/heads/sbx-pr-42");
    let dir = tempfile::tempdir().unwrap();
    let out = step(dir.path(), &url)
        .args([
            "--file",
            SANDBOX,
            "--namespace",
            "apps-sbx-pr-42",
            "--dry-run",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("+namespace: apps-sbx-pr-42   # replaced per sandbox"),
        "{}",
        text(&out)
    );
    // What a real run would do, said once and consistently: no "already as asked" after a diff.
    assert_eq!(read(dir.path(), "changed"), "true");
    assert!(
        text(&out).contains("a real run would patch and push"),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains("already as asked"), "{}", text(&out));
    assert_eq!(server.rev_parse("infra", "refs/heads/sbx-pr-42"), before);
}
