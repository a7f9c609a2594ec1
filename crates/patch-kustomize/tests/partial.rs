//! patch-kustomize against a server that serves partial fetches (protocol v2 with
//! `uploadpack.allowFilter`, as GitHub and GitLab do): only the commit, the trees on the file's
//! path and the file travel, whatever else the repository holds; racing runs all land, one after
//! another; a server without filters gets today's depth-1 fetch.

mod common;

use common::{all_succeed_at_once, git, text};

use std::path::Path;
use std::process::{Command, Output};

use testkit::GitServer;

const TOKEN: &str = "tok-partial";
const SANDBOX: &str = "kustomize/environments/sandbox/kustomization.yaml";
const KUSTOMIZATION: &str = "\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: apps-sandbox
images:
  - name: registry.example.com/acme/api
    newTag: latest
configMapGenerator:
  - name: app-config
    literals:
      - DB_NAME=sandbox
";

/// An infra repository whose branch `sbx-pr-7` holds the sandbox overlay, ten other overlays,
/// 2,000 other files and a 2 MiB file: a depth-1 fetch brings all of it.
fn infra() -> GitServer {
    let server = GitServer::start(TOKEN);
    let bulk: Vec<(String, String)> = (0..2000)
        .map(|i| {
            (
                format!("bulk/d{:02}/file-{i:04}.txt", i % 40),
                format!("file {i}\n"),
            )
        })
        .chain((0..10).map(|i| {
            (
                format!("kustomize/environments/team-{i}/kustomization.yaml"),
                KUSTOMIZATION.to_owned(),
            )
        }))
        .collect();
    // Incompressible: a pseudo-random 2 MiB blob.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let big: String = (0..2 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'!' + (state % 90) as u8)
        })
        .collect();
    let mut files: Vec<(&str, &str)> = bulk.iter().map(|(p, c)| (p.as_str(), c.as_str())).collect();
    files.push((SANDBOX, KUSTOMIZATION));
    files.push(("assets/big.txt", &big));
    server.create_repo("infra", &files);
    git(&server, &["branch", "sbx-pr-7", "main"]);
    server
}

fn step(server: &GitServer, outputs: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_patch-kustomize"));
    cmd.env_clear()
        .env("SBX_OUTPUTS_DIR", outputs)
        .env("T", TOKEN)
        .args(["--repo", &server.url("infra"), "--git-token", "env:T"])
        .args(["--branch", "sbx-pr-7"]);
    cmd
}

/// The bytes the step says it received, from its log line.
fn received(out: &Output) -> u64 {
    let log = String::from_utf8_lossy(&out.stderr);
    let line = log
        .lines()
        .find(|l| l.contains("byte(s) received"))
        .unwrap_or_else(|| panic!("no traffic line in:\n{log}"));
    let before = line.split(" byte(s) received").next().unwrap();
    before.rsplit(' ').next().unwrap().parse().unwrap()
}

/// The upload-pack requests the server got, as text.
fn upload_pack_requests(server: &GitServer) -> Vec<String> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("git-upload-pack"))
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect()
}

#[test]
fn an_edit_fetches_the_path_only_and_pushes_the_new_objects_only() {
    let server = infra();
    let out_dir = tempfile::tempdir().unwrap();
    let out = step(&server, out_dir.path())
        .args(["--file", SANDBOX, "--namespace", "apps-sbx-pr-7"])
        .args(["--set-image", "registry.example.com/acme/api=:pr-7"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let content = git(&server, &["show", &format!("sbx-pr-7:{SANDBOX}")]);
    assert!(content.contains("namespace: apps-sbx-pr-7") && content.contains("newTag: pr-7"));
    // One commit on main's, changing one file; the rest of the tree is main's.
    assert_eq!(
        git(&server, &["rev-parse", "sbx-pr-7^"]),
        git(&server, &["rev-parse", "main"])
    );
    assert_eq!(
        git(&server, &["diff", "--name-only", "main", "sbx-pr-7"]).trim(),
        SANDBOX
    );
    assert_eq!(git(&server, &["fsck", "--connectivity-only"]), "");
    // Every fetch was protocol v2 with a filter or a want of single objects; 2 MiB and 2,000
    // files stayed on the server.
    let bytes = received(&out);
    assert!(bytes < 16 * 1024, "received {bytes} bytes");
    let fetches = upload_pack_requests(&server);
    assert!(!fetches.is_empty());
    assert!(
        fetches.iter().all(|f| f.contains("command=")),
        "{fetches:?}"
    );
    assert!(fetches
        .iter()
        .any(|f| f.contains("deepen 1") && f.contains("filter tree:1")));
    // The push carried a pack of three trees, a blob and a commit... at most a few kB.
    let push = server
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("git-receive-pack"))
        .unwrap();
    assert!(push.body.len() < 4096, "pushed {} bytes", push.body.len());

    // Again: nothing to change, nothing pushed.
    let again = step(&server, out_dir.path())
        .args(["--file", SANDBOX, "--namespace", "apps-sbx-pr-7"])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert_eq!(
        std::fs::read_to_string(out_dir.path().join("changed")).unwrap(),
        "false"
    );
}

#[test]
fn images_from_reads_one_blob_of_the_other_branch() {
    let server = infra();
    let out_dir = tempfile::tempdir().unwrap();
    let out = step(&server, out_dir.path())
        .args(["--file", SANDBOX])
        .args(["--images-from", &format!("main:{SANDBOX}")])
        .args(["--namespace", "apps-sbx-pr-7"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // Two partial checkouts (main's file, then the edit), each a few kB.
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(log.matches("byte(s) received").count(), 2, "{log}");
    assert!(received(&out) < 16 * 1024);
    assert!(!log.contains("whole tip"), "{log}");
}

#[test]
fn ten_runs_on_ten_files_of_one_branch_all_land() {
    let server = infra();
    let dirs: Vec<_> = (0..10).map(|_| tempfile::tempdir().unwrap()).collect();
    all_succeed_at_once(
        dirs.iter()
            .enumerate()
            .map(|(i, d)| {
                let mut cmd = step(&server, d.path());
                cmd.args(["--namespace", &format!("apps-team-{i}")]).args([
                    "--file",
                    &format!("kustomize/environments/team-{i}/kustomization.yaml"),
                ]);
                cmd
            })
            .collect(),
    );
    for i in 0..10 {
        let file = format!("sbx-pr-7:kustomize/environments/team-{i}/kustomization.yaml");
        assert!(git(&server, &["show", &file]).contains(&format!("namespace: apps-team-{i}")));
    }
    assert_eq!(
        git(&server, &["rev-list", "--count", "main..sbx-pr-7"]).trim(),
        "10"
    );
}

#[test]
fn ten_runs_on_one_file_end_as_if_run_one_after_another() {
    let server = infra();
    let dirs: Vec<_> = (0..10).map(|_| tempfile::tempdir().unwrap()).collect();
    all_succeed_at_once(
        dirs.iter()
            .enumerate()
            .map(|(i, d)| {
                let mut cmd = step(&server, d.path());
                cmd.args(["--file", SANDBOX])
                    .args(["--set-literal", &format!("app-config/KEY_{i}=value-{i}")]);
                cmd
            })
            .collect(),
    );
    // Ten commits in a line, each adding its literal to what the one before left: no update lost,
    // none applied to a stale file. Replaying them one after another gives the same file.
    let commits = git(&server, &["rev-list", "--reverse", "main..sbx-pr-7"]);
    let commits: Vec<&str> = commits.lines().collect();
    assert_eq!(commits.len(), 10);
    let mut expected = KUSTOMIZATION.to_owned();
    for commit in commits {
        let content = git(&server, &["show", &format!("{commit}:{SANDBOX}")]);
        let kept = expected.lines().all(|e| content.lines().any(|l| l == e));
        assert!(
            kept,
            "{commit} lost a line of its parent's file:\n{content}"
        );
        let added: Vec<&str> = content
            .lines()
            .filter(|l| !expected.lines().any(|e| e == *l))
            .collect();
        assert_eq!(added.len(), 1, "{commit} added {added:?}");
        let key = added[0].trim().trim_start_matches("- ");
        assert!(key.starts_with("KEY_"), "{key}");
        expected = content;
    }
    for i in 0..10 {
        assert!(
            expected.contains(&format!("- KEY_{i}=value-{i}")),
            "{expected}"
        );
    }
}

#[test]
fn a_server_without_filters_gets_a_depth_one_fetch() {
    let server = infra();
    server.configure("infra", "uploadpack.allowFilter", "false");
    let out_dir = tempfile::tempdir().unwrap();
    let out = step(&server, out_dir.path())
        .args(["--file", SANDBOX, "--namespace", "apps-sbx-pr-7"])
        .args(["--images-from", &format!("main:{SANDBOX}")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let log = String::from_utf8_lossy(&out.stderr);
    // Said once, though two checkouts fell back.
    assert_eq!(log.matches("uploadpack.allowFilter").count(), 1, "{log}");
    let content = git(&server, &["show", &format!("sbx-pr-7:{SANDBOX}")]);
    assert!(content.contains("namespace: apps-sbx-pr-7"));
}

#[test]
fn a_push_the_server_refuses_is_reported_not_retried_until_the_deadline() {
    let server = infra();
    let hook = server.repo_path("infra").join("hooks/pre-receive");
    std::fs::write(
        &hook,
        "#!/bin/sh\necho 'branch frozen by policy' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let before = server.rev_parse("infra", "refs/heads/sbx-pr-7");
    let out_dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let out = step(&server, out_dir.path())
        .args(["--file", SANDBOX, "--namespace", "apps-sbx-pr-7"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("refused the push"), "{}", text(&out));
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(server.rev_parse("infra", "refs/heads/sbx-pr-7"), before);
}
