//! create-argocd-app run for real against the harness's git server (app-of-apps repository).

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use testkit::GitServer;

const TOKEN: &str = "tok-apps";

fn gitops() -> (GitServer, String) {
    let server = GitServer::start(TOKEN);
    let url = server.create_repo(
        "gitops",
        &[
            ("apps/sandboxes/.keep", ""),
            ("apps/platform.yaml", "kind: x\n"),
        ],
    );
    (server, url)
}

fn step(outputs: &Path, url: &str, name: &str) -> Command {
    let mut cmd = step_unallowed(outputs, url, name);
    // main is the app-of-apps branch: written on purpose (the template passes this too).
    cmd.arg("--allow-protected-branch");
    cmd
}

fn step_unallowed(outputs: &Path, url: &str, name: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_create-argocd-app"));
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
        ])
        .args([
            "--source-repo",
            "https://github.com/acme/infra.git",
            "--source-path",
            "kustomize/environments/sandbox",
        ])
        .args([
            "--target-revision",
            name,
            "--dest-namespace",
            &format!("apps-{name}"),
            "--pr-number",
            "42",
        ]);
    cmd
}

fn show(server: &GitServer, spec: &str) -> Option<String> {
    let out = Command::new("git")
        .args(["show", spec])
        .current_dir(server.repo_path("gitops"))
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

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

/// What the real API server, with Argo CD's Application CRD (of the version cluster/ pins), says
/// of the Application: created under strict field validation, or the reason it is refused.
fn api_server_refusal(doc: &Value) -> Option<String> {
    static SERVER: std::sync::OnceLock<testkit::KubeApiServer> = std::sync::OnceLock::new();
    let server = SERVER.get_or_init(|| {
        let server = testkit::KubeApiServer::start_with(testkit::KubeApiServerOptions {
            controller_manager: false,
            ..Default::default()
        });
        server.stop_at_exit();
        server.install_crds(&[testkit::cluster_cache().join("crds/argoproj.io_applications.yaml")]);
        server.create_namespace("argocd");
        server
    });
    let (status, body) = server.apply(doc, None);
    (status >= 300).then(|| format!("{status}: {body}"))
}

#[test]
fn writes_a_valid_application_once() {
    let (server, url) = gitops();
    let dir = tempfile::tempdir().unwrap();
    let out = step(dir.path(), &url, "sbx-pr-42")
        .args(["--label", "team=payments"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(read(dir.path(), "changed"), "true");
    assert_eq!(read(dir.path(), "path"), "apps/sandboxes/sbx-pr-42.yaml");
    assert_eq!(
        server.rev_parse("gitops", "refs/heads/main"),
        Some(read(dir.path(), "commit"))
    );
    let yaml = show(&server, "main:apps/sandboxes/sbx-pr-42.yaml").unwrap();
    let app: Value = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(api_server_refusal(&app), None);
    // The check has teeth: a misspelled field is refused.
    let mut typo = app.clone();
    typo["spec"]["destinaton"] = typo["spec"]["destination"].clone();
    assert!(api_server_refusal(&typo).is_some_and(|why| why.contains("destinaton")));
    assert_eq!(app["metadata"]["namespace"], "argocd");
    assert_eq!(
        app["metadata"]["finalizers"][0],
        "resources-finalizer.argocd.argoproj.io"
    );
    assert_eq!(
        app["metadata"]["labels"]["sandbox-steps.io/pr-number"],
        "42"
    );
    assert_eq!(app["metadata"]["labels"]["team"], "payments");
    assert_eq!(app["spec"]["syncPolicy"]["automated"]["prune"], true);
    assert_eq!(app["spec"]["syncPolicy"]["automated"]["selfHeal"], true);
    assert_eq!(
        app["spec"]["syncPolicy"]["syncOptions"][0],
        "CreateNamespace=true"
    );
    assert_eq!(app["spec"]["destination"]["namespace"], "apps-sbx-pr-42");
    let created = app["metadata"]["annotations"]["sandbox-steps.io/created-at"]
        .as_str()
        .unwrap()
        .to_owned();

    // Same again: no commit.
    let first = read(dir.path(), "commit");
    let out = step(dir.path(), &url, "sbx-pr-42")
        .args(["--label", "team=payments"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        (read(dir.path(), "changed"), read(dir.path(), "commit")),
        ("false".into(), first.clone())
    );

    // Something different: updated, the creation time kept.
    let out = step(dir.path(), &url, "sbx-pr-42")
        .args(["--label", "team=checkout"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(read(dir.path(), "changed"), "true");
    let app: Value =
        serde_yaml::from_str(&show(&server, "main:apps/sandboxes/sbx-pr-42.yaml").unwrap())
            .unwrap();
    assert_eq!(app["metadata"]["labels"]["team"], "checkout");
    assert_eq!(
        app["metadata"]["annotations"]["sandbox-steps.io/created-at"],
        created.as_str()
    );
    assert_eq!(
        show(&server, "main:apps/platform.yaml").as_deref(),
        Some("kind: x\n"),
        "other files kept"
    );
}

#[test]
fn ten_runs_at_once_lose_no_commit() {
    let (server, url) = gitops();
    let dirs: Vec<_> = (0..10).map(|_| tempfile::tempdir().unwrap()).collect();
    let children: Vec<_> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            step(d.path(), &url, &format!("sbx-pr-{i}"))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
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
    for i in 0..10 {
        assert!(
            show(&server, &format!("main:apps/sandboxes/sbx-pr-{i}.yaml")).is_some(),
            "sbx-pr-{i} kept"
        );
    }
}

#[test]
fn bad_input_pushes_nothing() {
    let (server, url) = gitops();
    let before = server.rev_parse("gitops", "refs/heads/main");
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &[&str])] = &[
        ("../x", &[]),
        ("sbx-1", &["--label", "bad key=v"]),
        ("sbx-1", &["--label", "novalue"]),
        ("sbx-1", &["--label", "k=bad value"]),
        ("sbx-1", &["--annotation", "noequals"]),
        ("sbx-1", &["--pr-number", "4x"]),
        ("UPPER", &[]),
    ];
    // --path cases, run with their own argument lists.
    for bad_path in ["../outside", "/etc", "a//b"] {
        let out = Command::new(env!("CARGO_BIN_EXE_create-argocd-app"))
            .env_clear()
            .env("SBX_OUTPUTS_DIR", dir.path())
            .env("T", TOKEN)
            .args([
                "--repo",
                &url,
                "--git-token",
                "env:T",
                "--path",
                bad_path,
                "--name",
                "sbx-1",
            ])
            .args([
                "--source-repo",
                "https://x/y.git",
                "--source-path",
                "k",
                "--target-revision",
                "sbx-1",
                "--dest-namespace",
                "n",
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad_path}: {}", text(&out));
    }
    for (name, extra) in cases {
        let out = step(dir.path(), &url, name).args(*extra).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{name} {extra:?}: {}",
            text(&out)
        );
    }
    assert_eq!(
        server.rev_parse("gitops", "refs/heads/main"),
        before,
        "nothing pushed"
    );
}

#[test]
fn dry_run_pushes_nothing() {
    let (server, url) = gitops();
    let before = server.rev_parse("gitops", "refs/heads/main");
    let dir = tempfile::tempdir().unwrap();
    let out = step(dir.path(), &url, "sbx-pr-7")
        .arg("--dry-run")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("would change"), "{}", text(&out));
    assert!(!text(&out).contains("already up to date"), "{}", text(&out));
    assert_eq!(read(dir.path(), "changed"), "true");
    assert_eq!(server.rev_parse("gitops", "refs/heads/main"), before);
}

/// The app-of-apps branch is usually main: written only when the run says so
/// (`--allow-protected-branch`, which the template passes); a run by hand without it is refused.
#[test]
fn a_protected_branch_is_written_only_when_allowed() {
    let (server, url) = gitops();
    let dir = tempfile::tempdir().unwrap();
    let before = server.rev_parse("gitops", "refs/heads/main");
    let out = step_unallowed(dir.path(), &url, "sbx-pr-5")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("--allow-protected-branch"), "{text}");
    assert_eq!(server.rev_parse("gitops", "refs/heads/main"), before);
    let out = step(dir.path(), &url, "sbx-pr-5").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_ne!(server.rev_parse("gitops", "refs/heads/main"), before);
}

/// A hand-written Application is never replaced, whatever the flags say; names and namespaces
/// outside the sandboxes and URLs carrying credentials are refused before anything is fetched.
#[test]
fn writes_only_its_own_files_inside_the_sandboxes() {
    let server = GitServer::start(TOKEN);
    let url = server.create_repo(
        "gitops",
        &[(
            "apps/sandboxes/sbx-prod-api.yaml",
            "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata:\n  name: sbx-prod-api\n",
        )],
    );
    let dir = tempfile::tempdir().unwrap();
    let before = server.rev_parse("gitops", "refs/heads/main");
    let text = |out: &Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    // The file is there and not ours: exit 3.
    let out = step(dir.path(), &url, "sbx-prod-api").output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("not written by sandbox-steps"),
        "{}",
        text(&out)
    );
    // Outside the sandboxes: exit 3.
    for (name, namespace_prefix) in [("prod-api", "apps-"), ("sbx-pr-1", "apps-team-")] {
        // (The namespace is apps-<name>.)
        let out = step(dir.path(), &url, name)
            .args(["--dest-namespace-prefix", namespace_prefix])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3), "{name}: {}", text(&out));
    }
    // Credentials in a URL that would be committed: exit 2, the token never printed.
    for url_flag in [
        "https://admin:ghp_SECRET123@cluster.example:6443",
        "https://ghp_SECRET123@cluster.example:6443",
    ] {
        let out = step(dir.path(), &url, "sbx-pr-2")
            .args(["--dest-server", url_flag])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(!text(&out).contains("ghp_SECRET123"), "{}", text(&out));
    }
    // A one-character prefix protects nothing: exit 2.
    let out = step(dir.path(), &url, "sbx-pr-2")
        .args(["--sandbox-prefix", "s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(server.rev_parse("gitops", "refs/heads/main"), before);
}
