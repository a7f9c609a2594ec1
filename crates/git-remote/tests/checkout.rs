//! The libgit2 side against the harness's git smart-HTTP server: shallow fetch, in-memory commits,
//! pushes that retry when someone else pushed first, credentials.

use std::process::Command;
use std::time::{Duration, Instant};

use git_remote::{commit_and_push, Change, Checkout, GitAuth, Identity};
use step_kit::Secret;
use testkit::GitServer;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "tok-checkout";

fn auth() -> GitAuth {
    GitAuth::Token {
        username: "x-access-token".into(),
        token: Secret::new(TOKEN),
    }
}

fn identity() -> Identity {
    Identity {
        name: "sandbox-steps".into(),
        email: "sandbox-steps@example.invalid".into(),
    }
}

fn show(server: &GitServer, spec: &str) -> Option<String> {
    let out = Command::new("git")
        .args(["show", spec])
        .current_dir(server.repo_path("infra"))
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn change(path: &str, content: &str) -> Change {
    Change {
        path: path.into(),
        content: Some(content.as_bytes().to_vec()),
    }
}

fn infra() -> GitServer {
    let server = GitServer::start(TOKEN);
    server.create_repo(
        "infra",
        &[("apps/a.yaml", "a: 1\n"), ("README.md", "infra\n")],
    );
    Command::new("git")
        .args(["branch", "sbx-pr-1", "main"])
        .current_dir(server.repo_path("infra"))
        .status()
        .unwrap();
    server
}

#[test]
fn shallow_fetch_reads_the_tip_without_history() {
    let server = infra();
    let checkout = Checkout::fetch(
        &server.url("infra"),
        "sbx-pr-1",
        auth(),
        None,
        CancellationToken::new(),
    )
    .unwrap();
    assert_eq!(
        checkout.tip().to_string(),
        server.rev_parse("infra", "refs/heads/sbx-pr-1").unwrap()
    );
    assert_eq!(
        checkout.read_file("apps/a.yaml").unwrap().as_deref(),
        Some(&b"a: 1\n"[..])
    );
    assert_eq!(checkout.read_file("apps/none.yaml").unwrap(), None);
    let missing = Checkout::fetch(
        &server.url("infra"),
        "no-such",
        auth(),
        None,
        CancellationToken::new(),
    );
    assert_eq!(missing.err().unwrap().exit_code(), 3);
}

#[test]
fn commits_and_pushes_a_change_and_nothing_when_there_is_none() {
    let server = infra();
    let workdir = tempfile::tempdir().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let pushed = commit_and_push(
        &server.url("infra"),
        "sbx-pr-1",
        auth(),
        Some(workdir.path()),
        &identity(),
        "sbx-pr-1: set a",
        deadline,
        CancellationToken::new(),
        |_| {
            Ok(vec![
                change("apps/a.yaml", "a: 2\n"),
                change("apps/new/b.yaml", "b: 1\n"),
                Change {
                    path: "README.md".into(),
                    content: None,
                },
            ])
        },
    )
    .unwrap();
    assert!(pushed.1, "a commit was pushed");
    let pushed = pushed.0;
    assert_eq!(
        server.rev_parse("infra", "refs/heads/sbx-pr-1"),
        Some(pushed.to_string())
    );
    assert_eq!(
        show(&server, "sbx-pr-1:apps/a.yaml").as_deref(),
        Some("a: 2\n")
    );
    assert_eq!(
        show(&server, "sbx-pr-1:apps/new/b.yaml").as_deref(),
        Some("b: 1\n")
    );
    assert_eq!(show(&server, "sbx-pr-1:README.md"), None);
    let log = Command::new("git")
        .args(["log", "-1", "--format=%an|%s", "sbx-pr-1"])
        .current_dir(server.repo_path("infra"))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&log.stdout);
    assert!(log.starts_with("sandbox-steps|sbx-pr-1: set a"), "{log}");
    assert_eq!(
        show(&server, "main:apps/a.yaml").as_deref(),
        Some("a: 1\n"),
        "main untouched"
    );

    // The same change again, reusing the workdir: nothing to commit, nothing pushed.
    let again = commit_and_push(
        &server.url("infra"),
        "sbx-pr-1",
        auth(),
        Some(workdir.path()),
        &identity(),
        "sbx-pr-1: set a",
        deadline,
        CancellationToken::new(),
        |_| Ok(vec![change("apps/a.yaml", "a: 2\n")]),
    )
    .unwrap();
    assert_eq!(again, (pushed, false));
    assert_eq!(
        server.rev_parse("infra", "refs/heads/sbx-pr-1"),
        Some(pushed.to_string())
    );
}

#[test]
fn a_push_that_lost_a_race_is_fetched_reapplied_and_pushed_again() {
    let server = infra();
    let url = server.url("infra");
    let competitor = server.url_with_credentials("infra");
    let mut attempts = 0;
    let pushed = commit_and_push(
        &url,
        "sbx-pr-1",
        auth(),
        None,
        &identity(),
        "ours",
        Instant::now() + Duration::from_secs(30),
        CancellationToken::new(),
        |checkout| {
            attempts += 1;
            if attempts == 1 {
                // Someone else pushes to the branch between our fetch and our push.
                let work = tempfile::tempdir().unwrap();
                let git = |args: &[&str]| {
                    assert!(Command::new("git")
                        .args(args)
                        .current_dir(work.path())
                        .env("GIT_CONFIG_GLOBAL", "/dev/null")
                        .env("GIT_AUTHOR_NAME", "other")
                        .env("GIT_AUTHOR_EMAIL", "o@example.invalid")
                        .env("GIT_COMMITTER_NAME", "other")
                        .env("GIT_COMMITTER_EMAIL", "o@example.invalid")
                        .status()
                        .unwrap()
                        .success());
                };
                git(&["clone", "-q", "--branch", "sbx-pr-1", &competitor, "."]);
                std::fs::write(work.path().join("theirs.txt"), "theirs\n").unwrap();
                git(&["add", "theirs.txt"]);
                git(&["commit", "-q", "-m", "theirs"]);
                git(&["push", "-q", "origin", "sbx-pr-1"]);
            }
            // The change is computed from what was fetched: on the retry, theirs is there.
            let seen = checkout.read_file("theirs.txt")?.is_some();
            Ok(vec![change("ours.txt", &format!("saw theirs: {seen}\n"))])
        },
    )
    .unwrap()
    .0;
    assert_eq!(attempts, 2);
    assert_eq!(
        server.rev_parse("infra", "refs/heads/sbx-pr-1"),
        Some(pushed.to_string())
    );
    assert_eq!(
        show(&server, "sbx-pr-1:theirs.txt").as_deref(),
        Some("theirs\n"),
        "theirs kept"
    );
    assert_eq!(
        show(&server, "sbx-pr-1:ours.txt").as_deref(),
        Some("saw theirs: true\n")
    );
}

#[test]
fn wrong_credentials_fail_fast_as_a_precondition() {
    let server = infra();
    let wrong = GitAuth::Token {
        username: "x-access-token".into(),
        token: Secret::new("wrong-token-99"),
    };
    let started = Instant::now();
    let err = Checkout::fetch(
        &server.url("infra"),
        "sbx-pr-1",
        wrong,
        None,
        CancellationToken::new(),
    )
    .err()
    .unwrap();
    assert_eq!(err.exit_code(), 3, "{err}");
    assert!(!err.to_string().contains("wrong-token-99"));
    assert!(started.elapsed() < Duration::from_secs(5));
    let auth_requests = server
        .requests()
        .iter()
        .filter(|r| r.header("authorization").is_some())
        .count();
    assert!(
        auth_requests <= 2,
        "credentials offered once, not replayed: {auth_requests}"
    );
}

#[test]
fn an_unreachable_remote_is_transient() {
    let url = format!("http://127.0.0.1:{}/infra.git", testkit::free_port());
    let err = Checkout::fetch(&url, "main", auth(), None, CancellationToken::new())
        .err()
        .unwrap();
    assert_eq!(err.exit_code(), 4, "{err}");
}
