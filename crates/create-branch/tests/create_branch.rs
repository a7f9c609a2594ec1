//! create-branch run for real against the harness's git smart-HTTP server (basic auth).

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use testkit::GitServer;

const TOKEN: &str = "tok-3f9a";

fn infra() -> (GitServer, String) {
    let server = GitServer::start(TOKEN);
    let url = server.create_repo(
        "infra",
        &[("kustomize/base/kustomization.yaml", "resources: []\n")],
    );
    (server, url)
}

fn step(outputs: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_create-branch"));
    cmd.env_clear()
        .env("SBX_OUTPUTS_DIR", outputs)
        .env("SBX_LOG_FORMAT", "json")
        .env("TEST_GIT_TOKEN", TOKEN)
        .args(["--git-token", "env:TEST_GIT_TOKEN"]);
    cmd
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn all_output(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn creates_the_branch_then_converges_on_re_runs() {
    let (server, url) = infra();
    let main = server.rev_parse("infra", "refs/heads/main").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = step(dir.path())
        .args(["--repo", &url, "--branch", "sbx-pr-42"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", all_output(&out));
    assert_eq!(read(dir.path(), "created"), "true");
    assert_eq!(read(dir.path(), "existed"), "false");
    assert_eq!(read(dir.path(), "commit"), main);
    assert_eq!(
        server.rev_parse("infra", "refs/heads/sbx-pr-42"),
        Some(main.clone())
    );
    // One listing and one ref update: no clone, no fetch of objects.
    let paths: Vec<String> = server
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        paths,
        [
            "GET /infra.git/info/refs",
            "POST /infra.git/git-receive-pack"
        ]
    );

    let out = step(dir.path())
        .args(["--repo", &url, "--branch", "sbx-pr-42"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", all_output(&out));
    assert_eq!(read(dir.path(), "created"), "false");
    assert_eq!(read(dir.path(), "existed"), "true");
    assert_eq!(read(dir.path(), "commit"), main);
}

#[test]
fn starts_from_another_base_and_moves_only_with_reset() {
    let (server, url) = infra();
    let dir = tempfile::tempdir().unwrap();
    // An `integration` branch one commit ahead of main, pushed with the git CLI.
    let work = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(work.path())
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    git(&["clone", "-q", &server.url_with_credentials("infra"), "."]);
    git(&["commit", "-q", "--allow-empty", "-m", "integration"]);
    git(&["push", "-q", "origin", "HEAD:refs/heads/integration"]);
    let integration = server.rev_parse("infra", "refs/heads/integration").unwrap();
    let main = server.rev_parse("infra", "refs/heads/main").unwrap();

    let out = step(dir.path())
        .args([
            "--repo",
            &url,
            "--branch",
            "sbx-pr-7",
            "--from",
            "integration",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", all_output(&out));
    assert_eq!(
        server.rev_parse("infra", "refs/heads/sbx-pr-7"),
        Some(integration.clone())
    );

    // From main without --reset: left where it is.
    let out = step(dir.path())
        .args(["--repo", &url, "--branch", "sbx-pr-7"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        (read(dir.path(), "created"), read(dir.path(), "commit")),
        ("false".into(), integration.clone())
    );
    assert_eq!(
        server.rev_parse("infra", "refs/heads/sbx-pr-7"),
        Some(integration)
    );

    // --dry-run --reset: says so, changes nothing.
    let out = step(dir.path())
        .args([
            "--repo",
            &url,
            "--branch",
            "sbx-pr-7",
            "--reset",
            "--dry-run",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        all_output(&out).contains("dry run: would move refs/heads/sbx-pr-7"),
        "{}",
        all_output(&out)
    );
    assert_ne!(
        server.rev_parse("infra", "refs/heads/sbx-pr-7"),
        Some(main.clone())
    );

    let out = step(dir.path())
        .args(["--repo", &url, "--branch", "sbx-pr-7", "--reset"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", all_output(&out));
    assert_eq!(server.rev_parse("infra", "refs/heads/sbx-pr-7"), Some(main));

    // A commit id as the start point.
    let out = step(dir.path())
        .args([
            "--repo",
            &url,
            "--branch",
            "sbx-pr-8",
            "--from",
            &read(dir.path(), "commit"),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", all_output(&out));
}

#[test]
fn dry_run_creates_nothing() {
    let (server, url) = infra();
    let dir = tempfile::tempdir().unwrap();
    let out = step(dir.path())
        .args(["--repo", &url, "--branch", "sbx-pr-9", "--dry-run"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", all_output(&out));
    assert_eq!(read(dir.path(), "created"), "false");
    assert_eq!(read(dir.path(), "existed"), "false");
    assert_eq!(server.rev_parse("infra", "refs/heads/sbx-pr-9"), None);

    // The probe delete-sandbox makes of it: an existing branch is reported so, left as it is.
    let main = server.rev_parse("infra", "refs/heads/main").unwrap();
    server.update_ref("infra", "refs/heads/sbx-pr-9", &main);
    let out = step(dir.path())
        .args(["--repo", &url, "--branch", "sbx-pr-9", "--dry-run"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", all_output(&out));
    assert_eq!(read(dir.path(), "existed"), "true");
    assert_eq!(read(dir.path(), "created"), "false");
}

#[test]
fn bad_input_changes_nothing() {
    let (server, url) = infra();
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], i32)] = &[
        (&["--branch", "../x"], 2),
        (&["--branch", ";rm -rf /"], 2),
        (&["--branch", "a\nb"], 2),
        (&["--branch", ""], 2),
        (&["--branch", "x.lock"], 2),
        (&["--branch", "-x"], 2),
        (&["--branch", "sbx-1", "--from", "a..b"], 2),
        (&["--branch", "HEAD"], 2),
        (&["--branch", "refs/heads/main"], 2),
        (&["--branch", "sbx-1", "--sandbox-prefix", "s"], 2),
        // The null id in a ref update deletes the branch: never a start point.
        (
            &[
                "--branch",
                "sbx-1",
                "--from",
                "0000000000000000000000000000000000000000",
                "--reset",
            ],
            2,
        ),
        (&["--branch", "main"], 3),
        (&["--branch", "MAIN"], 3),
        (&["--branch", "Master", "--reset"], 3),
        (&["--branch", "master"], 3),
        // --reset moves only environment branches.
        (&["--branch", "integration", "--reset"], 3),
        (
            &[
                "--branch",
                "release/1.0",
                "--protected-branches",
                "release/*",
            ],
            3,
        ),
        (&["--branch", "sbx-1", "--from", "no-such-branch"], 3),
        // A commit id the remote does not have: refused by the remote, not worth a retry.
        (
            &[
                "--branch",
                "sbx-1",
                "--from",
                "0123456789abcdef0123456789abcdef01234567",
            ],
            3,
        ),
    ];
    for (args, code) in cases {
        let out = step(dir.path())
            .args(["--repo", &url])
            .args(*args)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(*code),
            "{args:?}: {}",
            all_output(&out)
        );
    }
    let refs = Command::new("git")
        .args(["for-each-ref", "--format=%(refname)"])
        .current_dir(server.repo_path("infra"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&refs.stdout).trim(),
        "refs/heads/main",
        "nothing created"
    );

    // The remote's default branch is protected even when not named main.
    for args in [
        &["branch", "trunk", "main"][..],
        &["symbolic-ref", "HEAD", "refs/heads/trunk"],
    ] {
        let status = Command::new("git")
            .args(args)
            .current_dir(server.repo_path("infra"))
            .status()
            .unwrap();
        assert!(status.success());
    }
    let out = step(dir.path())
        .args(["--repo", &url, "--branch", "trunk", "--reset"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", all_output(&out));

    // Literal secrets and credentials in URLs are refused before anything is sent.
    let out = Command::new(env!("CARGO_BIN_EXE_create-branch"))
        .env_clear()
        .env("SBX_OUTPUTS_DIR", dir.path())
        .args(["--repo", &url, "--branch", "sbx-1", "--git-token", TOKEN])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(!all_output(&out).contains(TOKEN));
    let out = step(dir.path())
        .args([
            "--repo",
            &server.url_with_credentials("infra"),
            "--branch",
            "sbx-1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(!all_output(&out).contains(TOKEN), "{}", all_output(&out));
}

#[test]
fn a_wrong_token_is_exit_3_and_never_printed() {
    let (_server, url) = infra();
    let dir = tempfile::tempdir().unwrap();
    let out = step(dir.path())
        .env("TEST_GIT_TOKEN", "wrong-token-1234")
        .args(["--repo", &url, "--branch", "sbx-pr-1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", all_output(&out));
    let text = all_output(&out);
    assert!(
        text.contains("authentication failed") && text.contains("--git-token"),
        "{text}"
    );
    assert!(!text.contains("wrong-token-1234"), "{text}");
}

#[test]
fn an_unreachable_server_is_exit_4_after_retries_within_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{}/infra.git", testkit::free_port());
    let started = Instant::now();
    let out = step(dir.path())
        .args(["--repo", &url, "--branch", "sbx-pr-1", "--timeout", "3s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", all_output(&out));
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    assert!(
        all_output(&out).contains("retrying"),
        "retried: {}",
        all_output(&out)
    );
}

#[test]
fn ten_runs_at_once_for_different_branches_all_succeed() {
    let (server, url) = infra();
    let main = server.rev_parse("infra", "refs/heads/main").unwrap();
    let dirs: Vec<_> = (0..10).map(|_| tempfile::tempdir().unwrap()).collect();
    let children: Vec<_> = dirs
        .iter()
        .enumerate()
        .map(|(i, dir)| {
            step(dir.path())
                .args(["--repo", &url, "--branch", &format!("sbx-pr-{i}")])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "run {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            server.rev_parse("infra", &format!("refs/heads/sbx-pr-{i}")),
            Some(main.clone())
        );
    }
}

#[test]
fn ten_runs_racing_for_the_same_branch_all_converge() {
    let (server, url) = infra();
    let dirs: Vec<_> = (0..10).map(|_| tempfile::tempdir().unwrap()).collect();
    let children: Vec<_> = dirs
        .iter()
        .map(|dir| {
            step(dir.path())
                .args(["--repo", &url, "--branch", "sbx-pr-race"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let created: usize = dirs
        .iter()
        .filter(|d| read(d.path(), "created") == "true")
        .count();
    assert_eq!(created, 1, "exactly one run created it");
    assert!(server
        .rev_parse("infra", "refs/heads/sbx-pr-race")
        .is_some());
}

#[test]
fn over_ssh_with_a_key_and_known_hosts() {
    let server = testkit::SshGitServer::start();
    let url = server.create_repo("infra", &[("a.txt", "a\n")]);
    let main = server.rev_parse("infra", "refs/heads/main").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(&known_hosts, server.known_hosts()).unwrap();
    let workdir = dir.path().join("work");
    let ssh_step = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_create-branch"));
        cmd.env_clear()
            .env("SBX_OUTPUTS_DIR", dir.path().join("out"))
            .env("TEST_SSH_KEY", server.client_key())
            .args(["--repo", &url, "--ssh-key", "env:TEST_SSH_KEY"])
            .arg("--known-hosts")
            .arg(&known_hosts)
            .arg("--workdir")
            .arg(&workdir);
        cmd
    };
    let out = ssh_step().args(["--branch", "sbx-pr-5"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", all_output(&out));
    assert_eq!(read(&dir.path().join("out"), "created"), "true");
    assert_eq!(
        server.rev_parse("infra", "refs/heads/sbx-pr-5"),
        Some(main.clone())
    );
    // Re-run: converges, reusing the workdir.
    let out = ssh_step().args(["--branch", "sbx-pr-5"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", all_output(&out));
    assert_eq!(read(&dir.path().join("out"), "created"), "false");
    // A host key that is not the server's: exit 3, nothing created.
    std::fs::write(&known_hosts, server.wrong_known_hosts()).unwrap();
    let out = ssh_step().args(["--branch", "sbx-pr-6"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", all_output(&out));
    assert!(!all_output(&out).contains("PRIVATE KEY"));
    assert_eq!(server.rev_parse("infra", "refs/heads/sbx-pr-6"), None);
    // No --known-hosts at all: refused before connecting.
    let out = Command::new(env!("CARGO_BIN_EXE_create-branch"))
        .env_clear()
        .env("SBX_OUTPUTS_DIR", dir.path())
        .env("TEST_SSH_KEY", server.client_key())
        .args([
            "--repo",
            &url,
            "--ssh-key",
            "env:TEST_SSH_KEY",
            "--branch",
            "sbx-pr-6",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", all_output(&out));
}

/// https:// to a server that speaks plain HTTP never heals: exit 3 at once with a hint, not
/// retries until the deadline.
#[test]
fn https_to_a_plain_http_server_is_exit_3_at_once() {
    let (_server, url) = infra();
    let dir = tempfile::tempdir().unwrap();
    let https = url.replacen("http://", "https://", 1);
    let started = std::time::Instant::now();
    let out = step(dir.path())
        .args(["--repo", &https, "--branch", "sbx-1", "--timeout", "30s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", all_output(&out));
    assert!(
        all_output(&out).contains("does not speak TLS"),
        "{}",
        all_output(&out)
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
