//! The harness proves itself: each real server starts, answers, and stops.

use std::process::Command;

use testkit::{FakeGcs, GitServer, Postgres};

fn git_cli(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .unwrap()
}

#[test]
fn git_cli_clones_and_pushes_over_smart_http_with_basic_auth() {
    let server = GitServer::start("s3cret-token");
    server.create_repo(
        "infra",
        &[("kustomize/base/kustomization.yaml", "resources: []\n")],
    );
    let work = tempfile::tempdir().unwrap();
    let out = git_cli(
        work.path(),
        &[
            "clone",
            "--quiet",
            &server.url_with_credentials("infra"),
            "clone",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let clone = work.path().join("clone");
    assert!(clone.join("kustomize/base/kustomization.yaml").is_file());

    std::fs::write(clone.join("README.md"), "sandbox\n").unwrap();
    assert!(git_cli(&clone, &["add", "README.md"]).status.success());
    assert!(git_cli(&clone, &["commit", "--quiet", "-m", "readme"])
        .status
        .success());
    let out = git_cli(
        &clone,
        &["push", "--quiet", "origin", "HEAD:refs/heads/sbx-pr-1"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let local = String::from_utf8(git_cli(&clone, &["rev-parse", "HEAD"]).stdout).unwrap();
    assert_eq!(
        server.rev_parse("infra", "refs/heads/sbx-pr-1").as_deref(),
        Some(local.trim())
    );

    // A wrong token is refused with 401, a missing one too.
    let wrong = server
        .url_with_credentials("infra")
        .replace("s3cret-token", "wrong");
    let out = git_cli(work.path(), &["clone", "--quiet", &wrong, "denied"]);
    assert!(!out.status.success());
    let out = git_cli(work.path(), &["ls-remote", &server.url("infra")]);
    assert!(!out.status.success());
    assert!(server
        .requests()
        .iter()
        .any(|r| r.header("authorization").is_none()));
}

#[test]
fn git2_fetches_shallow_and_pushes_chunked_over_smart_http() {
    let server = GitServer::start("tok");
    server.create_repo("infra", &[("a.txt", "a\n")]);
    let main = server.rev_parse("infra", "refs/heads/main").unwrap();

    let dir = tempfile::tempdir().unwrap();
    let repo = git2::Repository::init_bare(dir.path()).unwrap();
    let mut remote = repo.remote_anonymous(&server.url("infra")).unwrap();
    let credentials = |_: &str, _: Option<&str>, _: git2::CredentialType| {
        git2::Cred::userpass_plaintext("x-access-token", "tok")
    };

    let mut callbacks = git2::RemoteCallbacks::new();
    callbacks.credentials(credentials);
    let mut fetch = git2::FetchOptions::new();
    fetch.remote_callbacks(callbacks).depth(1);
    remote
        .fetch(
            &["+refs/heads/main:refs/remotes/origin/main"],
            Some(&mut fetch),
            None,
        )
        .unwrap();
    let tip = repo
        .find_reference("refs/remotes/origin/main")
        .unwrap()
        .peel_to_commit()
        .unwrap();
    assert_eq!(tip.id().to_string(), main);

    // A new commit on top, pushed as a new branch (libgit2 sends the pack chunked).
    let blob = repo.blob(b"from git2\n").unwrap();
    let mut tree = repo.treebuilder(Some(&tip.tree().unwrap())).unwrap();
    tree.insert("b.txt", blob, 0o100644).unwrap();
    let tree = repo.find_tree(tree.write().unwrap()).unwrap();
    let sig = git2::Signature::now("t", "t@example.invalid").unwrap();
    let commit = repo
        .commit(None, &sig, &sig, "from git2", &tree, &[&tip])
        .unwrap();
    repo.reference("refs/heads/sbx-pr-2", commit, true, "test")
        .unwrap();

    let mut rejected = Vec::new();
    {
        let mut callbacks = git2::RemoteCallbacks::new();
        callbacks.credentials(credentials);
        // A refused ref update is reported here, not as an Err from push.
        callbacks.push_update_reference(|name, status| {
            if let Some(msg) = status {
                rejected.push(format!("{name}: {msg}"));
            }
            Ok(())
        });
        let mut push = git2::PushOptions::new();
        push.remote_callbacks(callbacks);
        remote
            .push(
                &["refs/heads/sbx-pr-2:refs/heads/sbx-pr-2"],
                Some(&mut push),
            )
            .unwrap();
    }
    assert!(rejected.is_empty(), "{rejected:?}");
    assert_eq!(
        server.rev_parse("infra", "refs/heads/sbx-pr-2"),
        Some(commit.to_string())
    );
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.path.ends_with("git-receive-pack")
                && r.header("transfer-encoding") == Some("chunked")),
        "the push body arrived chunked and was accepted"
    );

    // Wrong credentials: an authentication error, not a hang or a success.
    let mut callbacks = git2::RemoteCallbacks::new();
    let mut calls = 0;
    callbacks.credentials(move |_, _, _| {
        calls += 1;
        if calls > 1 {
            return Err(git2::Error::from_str("credentials rejected"));
        }
        git2::Cred::userpass_plaintext("x-access-token", "wrong")
    });
    let mut fetch = git2::FetchOptions::new();
    fetch.remote_callbacks(callbacks);
    let mut remote = repo.remote_anonymous(&server.url("infra")).unwrap();
    assert!(remote
        .fetch(&["refs/heads/main"], Some(&mut fetch), None)
        .is_err());
}

#[test]
fn postgres_cluster_starts_on_a_free_port_and_answers() {
    let pg = Postgres::start();
    assert_eq!(pg.psql("postgres", "select 1 + 1"), "2");
    let version = pg.psql("postgres", "show server_version_num");
    assert!(
        version.starts_with("15") || version.parse::<u32>().unwrap() >= 150000,
        "{version}"
    );
    pg.psql("postgres", "create database sbx_pr_1");
    assert_eq!(pg.psql("sbx_pr_1", "select current_database()"), "sbx_pr_1");
}

#[test]
fn fake_gcs_serves_the_json_api_with_pagination() {
    let gcs = FakeGcs::start();
    gcs.create_bucket("acme-integration");
    let meta = gcs.put_object(
        "acme-integration",
        "documents/a.pdf",
        "application/pdf",
        b"%PDF-1.4",
    );
    assert_eq!(meta["size"], "8");
    assert!(
        meta["crc32c"].as_str().is_some_and(|c| !c.is_empty()),
        "{meta}"
    );
    for i in 0..3 {
        gcs.put_object(
            "acme-integration",
            &format!("documents/{i}.txt"),
            "text/plain",
            b"x",
        );
    }
    gcs.put_object("acme-integration", "other/x.txt", "text/plain", b"x");
    let mut names = gcs.list("acme-integration", "documents/");
    names.sort();
    assert_eq!(
        names,
        [
            "documents/0.txt",
            "documents/1.txt",
            "documents/2.txt",
            "documents/a.pdf"
        ]
    );
}
