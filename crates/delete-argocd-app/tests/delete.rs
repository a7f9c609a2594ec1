//! delete-argocd-app run for real against the harness's git server.

use std::path::Path;
use std::process::{Command, Output};

use testkit::GitServer;

const TOKEN: &str = "tok-del";

fn step(outputs: &Path, url: &str, name: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_delete-argocd-app"));
    cmd.env_clear()
        .env("SBX_OUTPUTS_DIR", outputs)
        .env("T", TOKEN)
        .args([
            "--repo",
            url,
            "--git-token",
            "env:T",
            "--path",
            "apps/sandboxes",
            "--name",
            name,
            // main is the app-of-apps branch: written on purpose (the template passes this too).
            "--allow-protected-branch",
        ]);
    cmd
}

/// An Application as create-argocd-app writes it (its marker label).
const OURS: &str =
    "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata:\n  labels:\n    \
                    app.kubernetes.io/managed-by: sandbox-steps\n";

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn exists(server: &GitServer, path: &str) -> bool {
    Command::new("git")
        .args(["cat-file", "-e", &format!("main:{path}")])
        .current_dir(server.repo_path("gitops"))
        .status()
        .unwrap()
        .success()
}

#[test]
fn removes_the_application_then_finds_it_absent() {
    let server = GitServer::start(TOKEN);
    let url = server.create_repo(
        "gitops",
        &[
            ("apps/sandboxes/sbx-pr-42.yaml", OURS),
            ("apps/sandboxes/sbx-pr-43.yaml", OURS),
            // Named like a sandbox's, written by hand: never removed.
            ("apps/sandboxes/sbx-hand.yaml", "kind: Application\n"),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let out = step(dir.path(), &url, "sbx-pr-42")
        .arg("--dry-run")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        exists(&server, "apps/sandboxes/sbx-pr-42.yaml"),
        "dry run removes nothing"
    );

    let out = step(dir.path(), &url, "sbx-pr-42").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(read(dir.path(), "deleted"), "true");
    assert_eq!(read(dir.path(), "path"), "apps/sandboxes/sbx-pr-42.yaml");
    assert!(!exists(&server, "apps/sandboxes/sbx-pr-42.yaml"));
    assert!(
        exists(&server, "apps/sandboxes/sbx-pr-43.yaml"),
        "the other sandbox kept"
    );
    assert_eq!(
        server.rev_parse("gitops", "refs/heads/main"),
        Some(read(dir.path(), "commit"))
    );

    let out = step(dir.path(), &url, "sbx-pr-42").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(read(dir.path(), "deleted"), "false");

    let before = server.rev_parse("gitops", "refs/heads/main");
    let out = step(dir.path(), &url, "sbx-hand").output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("not written by sandbox-steps"),
        "{}",
        text(&out)
    );
    assert!(exists(&server, "apps/sandboxes/sbx-hand.yaml"));
    assert_eq!(server.rev_parse("gitops", "refs/heads/main"), before);
}

#[test]
fn names_outside_the_prefix_and_bad_paths_are_refused() {
    let server = GitServer::start(TOKEN);
    let url = server.create_repo(
        "gitops",
        &[("apps/sandboxes/platform.yaml", "kind: Application\n")],
    );
    let before = server.rev_parse("gitops", "refs/heads/main");
    let dir = tempfile::tempdir().unwrap();
    let out = step(dir.path(), &url, "platform").output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    for (name, code) in [("../x", 2), ("sbx-a/b", 2), ("", 2)] {
        let out = step(dir.path(), &url, name).output().unwrap();
        assert_eq!(out.status.code(), Some(code), "{name}: {}", text(&out));
    }
    let out = Command::new(env!("CARGO_BIN_EXE_delete-argocd-app"))
        .env_clear()
        .env("SBX_OUTPUTS_DIR", dir.path())
        .args(["--repo", &url, "--path", "../apps", "--name", "sbx-pr-1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(server.rev_parse("gitops", "refs/heads/main"), before);
    assert!(exists(&server, "apps/sandboxes/platform.yaml"));
}
