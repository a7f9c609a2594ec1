//! cleanup-branch run for real against the harness's git server and the GitHub API double.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use testkit::{Fault, GitHubDouble, GitServer};

const GIT_TOKEN: &str = "git-tok-1";
const GH_TOKEN: &str = "gh-tok-2";

/// A repo with `main` and the sandbox branch `sbx-pr-42`, and a GitHub double for acme/infra.
fn setup() -> (GitServer, String, GitHubDouble) {
    let server = GitServer::start(GIT_TOKEN);
    let url = server.create_repo("infra", &[("README.md", "infra\n")]);
    for args in [
        &["branch", "sbx-pr-42", "main"][..],
        &["branch", "release-1", "main"],
    ] {
        let status = Command::new("git")
            .args(args)
            .current_dir(server.repo_path("infra"))
            .status()
            .unwrap();
        assert!(status.success());
    }
    let github = GitHubDouble::start("acme", "infra", GH_TOKEN);
    (server, url, github)
}

fn step(outputs: &Path, url: &str, github: &GitHubDouble) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cleanup-branch"));
    cmd.env_clear()
        .env("SBX_OUTPUTS_DIR", outputs)
        .env("SBX_LOG_FORMAT", "json")
        .env("T_GIT", GIT_TOKEN)
        .env("T_GH", GH_TOKEN)
        .args(["--repo", url, "--git-token", "env:T_GIT"])
        .args(["--github-repo", "acme/infra", "--github-token", "env:T_GH"])
        .args(["--github-api-url", &github.url()]);
    cmd
}

fn outputs(dir: &Path) -> (String, String) {
    let read =
        |n: &str| std::fs::read_to_string(dir.join(n)).unwrap_or_else(|e| panic!("{n}: {e}"));
    (read("deleted"), read("reason"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn deletes_the_branch_then_finds_it_absent() {
    let (server, url, github) = setup();
    let dir = tempfile::tempdir().unwrap();
    let out = step(dir.path(), &url, &github)
        .args(["--branch", "sbx-pr-42"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(outputs(dir.path()), ("true".into(), "deleted".into()));
    assert_eq!(server.rev_parse("infra", "refs/heads/sbx-pr-42"), None);
    let pulls = &github.requests()[0];
    assert_eq!(pulls.query_param("state"), Some("open"));
    assert_eq!(pulls.query_param("head"), Some("acme%3Asbx-pr-42"));

    let out = step(dir.path(), &url, &github)
        .args(["--branch", "sbx-pr-42"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(outputs(dir.path()), ("false".into(), "absent".into()));
}

#[test]
fn an_open_pull_request_keeps_the_branch_and_a_closed_one_does_not() {
    let (server, url, github) = setup();
    github.add_pull(17, "open", "sbx-pr-42");
    github.add_pull(9, "closed", "sbx-pr-42");
    let dir = tempfile::tempdir().unwrap();
    let out = step(dir.path(), &url, &github)
        .args(["--branch", "sbx-pr-42"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(outputs(dir.path()), ("false".into(), "open-pr #17".into()));
    assert!(server.rev_parse("infra", "refs/heads/sbx-pr-42").is_some());

    let (server, url, github) = setup();
    github.add_pull(9, "closed", "sbx-pr-42");
    github.add_pull(10, "open", "sbx-pr-43");
    let out = step(dir.path(), &url, &github)
        .args(["--branch", "sbx-pr-42"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(outputs(dir.path()), ("true".into(), "deleted".into()));
    assert_eq!(server.rev_parse("infra", "refs/heads/sbx-pr-42"), None);
}

#[test]
fn every_page_of_pull_requests_is_read() {
    let (server, url, github) = setup();
    for n in 1..=120 {
        github.add_pull(1000 - n, "open", "sbx-pr-42");
    }
    let dir = tempfile::tempdir().unwrap();
    let out = step(dir.path(), &url, &github)
        .args(["--branch", "sbx-pr-42"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        outputs(dir.path()),
        ("false".into(), "open-pr #880".into()),
        "the lowest, on page 2"
    );
    assert_eq!(github.requests().len(), 2);
    assert!(server.rev_parse("infra", "refs/heads/sbx-pr-42").is_some());
}

#[test]
fn protected_and_foreign_branches_are_refused() {
    let (server, url, github) = setup();
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], i32)] = &[
        (&["--branch", "main", "--sandbox-prefix", "ma"], 3),
        (&["--branch", "release-1"], 3),
        (
            &[
                "--branch",
                "release-1",
                "--sandbox-prefix",
                "release-",
                "--protected-branches",
                "release-*",
            ],
            3,
        ),
        (&["--branch", "../x"], 2),
        (&["--branch", ";rm -rf /"], 2),
        (&["--branch", "sbx-pr-42", "--sandbox-prefix", ""], 2),
    ];
    for (args, code) in cases {
        let out = step(dir.path(), &url, &github)
            .args(*args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {}", text(&out));
    }
    // --github-repo without a token is a usage error.
    let out = Command::new(env!("CARGO_BIN_EXE_cleanup-branch"))
        .env_clear()
        .env("SBX_OUTPUTS_DIR", dir.path())
        .args([
            "--repo",
            &url,
            "--branch",
            "sbx-pr-42",
            "--github-repo",
            "acme/infra",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // The default branch is protected even under the sandbox prefix.
    for args in [
        &["branch", "sbx-default", "main"][..],
        &["symbolic-ref", "HEAD", "refs/heads/sbx-default"],
    ] {
        assert!(Command::new("git")
            .args(args)
            .current_dir(server.repo_path("infra"))
            .status()
            .unwrap()
            .success());
    }
    let out = step(dir.path(), &url, &github)
        .args(["--branch", "sbx-default"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    for branch in ["main", "release-1", "sbx-pr-42", "sbx-default"] {
        assert!(
            server
                .rev_parse("infra", &format!("refs/heads/{branch}"))
                .is_some(),
            "{branch} kept"
        );
    }
}

#[test]
fn without_a_github_repo_the_pull_request_check_is_skipped() {
    let (server, url, github) = setup();
    github.add_pull(17, "open", "sbx-pr-42");
    let dir = tempfile::tempdir().unwrap();
    // As the template passes it: GITHUB_REPO empty, the token reference still set.
    let out = Command::new(env!("CARGO_BIN_EXE_cleanup-branch"))
        .env_clear()
        .env("SBX_OUTPUTS_DIR", dir.path())
        .env("T_GIT", GIT_TOKEN)
        .env("SBX_GITHUB_REPO", "")
        .env("SBX_GITHUB_TOKEN", "env:UNSET_TOKEN_VAR")
        .args([
            "--repo",
            &url,
            "--git-token",
            "env:T_GIT",
            "--branch",
            "sbx-pr-42",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(outputs(dir.path()), ("true".into(), "deleted".into()));
    assert!(github.requests().is_empty());
    assert_eq!(server.rev_parse("infra", "refs/heads/sbx-pr-42"), None);
}

#[test]
fn dry_run_deletes_nothing() {
    let (server, url, github) = setup();
    let dir = tempfile::tempdir().unwrap();
    let out = step(dir.path(), &url, &github)
        .args(["--branch", "sbx-pr-42", "--dry-run"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(outputs(dir.path()), ("false".into(), "dry-run".into()));
    assert!(server.rev_parse("infra", "refs/heads/sbx-pr-42").is_some());
}

#[test]
fn rate_limits_are_waited_out_within_the_deadline() {
    let (server, url, github) = setup();
    github.inject(&[
        Fault::PrimaryRateLimit {
            reset_in_seconds: 1,
        },
        Fault::SecondaryRateLimit {
            retry_after_seconds: 1,
        },
    ]);
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = step(dir.path(), &url, &github)
        .args(["--branch", "sbx-pr-42"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "waited: {:?}",
        started.elapsed()
    );
    assert_eq!(outputs(dir.path()), ("true".into(), "deleted".into()));
    assert_eq!(server.rev_parse("infra", "refs/heads/sbx-pr-42"), None);

    // A reset after the deadline: exit 4 at once, nothing deleted.
    let (server, url, github) = setup();
    github.inject(&[Fault::PrimaryRateLimit {
        reset_in_seconds: 3600,
    }]);
    let started = Instant::now();
    let out = step(dir.path(), &url, &github)
        .args(["--branch", "sbx-pr-42", "--timeout", "20s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(server.rev_parse("infra", "refs/heads/sbx-pr-42").is_some());
}

#[test]
fn server_errors_are_retried() {
    let (server, url, github) = setup();
    github.inject(&[Fault::Status(502), Fault::Status(503)]);
    let dir = tempfile::tempdir().unwrap();
    let out = step(dir.path(), &url, &github)
        .args(["--branch", "sbx-pr-42"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(github.requests().len(), 3);
    assert_eq!(server.rev_parse("infra", "refs/heads/sbx-pr-42"), None);
}

#[test]
fn a_wrong_github_token_is_exit_3_and_never_printed() {
    let (server, url, github) = setup();
    let dir = tempfile::tempdir().unwrap();
    let out = step(dir.path(), &url, &github)
        .env("T_GH", "gh-wrong-777")
        .args(["--branch", "sbx-pr-42"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(!text(&out).contains("gh-wrong-777"));
    assert!(server.rev_parse("infra", "refs/heads/sbx-pr-42").is_some());
}

#[test]
fn over_ssh_with_a_key_and_known_hosts() {
    let server = testkit::SshGitServer::start();
    let url = server.create_repo("infra", &[("a.txt", "a\n")]);
    assert!(Command::new("git")
        .args(["branch", "sbx-pr-42", "main"])
        .current_dir(server.repo_path("infra"))
        .status()
        .unwrap()
        .success());
    let dir = tempfile::tempdir().unwrap();
    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(&known_hosts, server.known_hosts()).unwrap();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_cleanup-branch"))
            .env_clear()
            .env("SBX_OUTPUTS_DIR", dir.path())
            .env("TEST_SSH_KEY", server.client_key())
            .args([
                "--repo",
                &url,
                "--ssh-key",
                "env:TEST_SSH_KEY",
                "--branch",
                "sbx-pr-42",
            ])
            .arg("--known-hosts")
            .arg(&known_hosts)
            .output()
            .unwrap()
    };
    let out = run();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(outputs(dir.path()), ("true".into(), "deleted".into()));
    assert_eq!(server.rev_parse("infra", "refs/heads/sbx-pr-42"), None);
    let out = run();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(outputs(dir.path()), ("false".into(), "absent".into()));
}
