//! Sleep and wake for real: patch-kustomize commits to the harness's git server, a real kustomize
//! renders the environment, and the rendered workloads are applied to a real Kubernetes API server
//! (what Argo CD does after a sync; Argo CD itself does not run here), whose objects must then
//! hold the committed replica counts.

mod common;

use common::{git, text};

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use testkit::{GitServer, KubeApiServer};

const TOKEN: &str = "tok-infra";
const BRANCH: &str = "sbx-pr-42";
const SANDBOX: &str = "env/sandbox/kustomization.yaml";
const NAMESPACE: &str = "apps-sbx-pr-42";

fn workload(kind: &str, name: &str, replicas: Option<u32>) -> String {
    let replicas = replicas.map_or(String::new(), |n| format!("  replicas: {n}\n"));
    let service = if kind == "StatefulSet" {
        format!("  serviceName: {name}\n")
    } else {
        String::new()
    };
    format!(
        "apiVersion: apps/v1\nkind: {kind}\nmetadata:\n  name: {name}\nspec:\n{replicas}{service}  \
         selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: \
         {{app: {name}}}\n    spec:\n      containers:\n      - name: main\n        image: \
         registry.example.com/acme/{name}:1.0.0\n"
    )
}

/// The overlay as a platform team writes it: comments, a `replicas:` entry for one workload;
/// the base has a Deployment with no count (1 by default), one with a count in its manifest, and
/// a StatefulSet.
const OVERLAY: &str = "\
# The sandbox overlay.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: apps-sbx-pr-42   # set per sandbox
namePrefix: sbx-
resources:
  - ../../base
replicas:
  - name: api   # the API takes the load
    count: 3
";

fn infra() -> (GitServer, String) {
    let server = GitServer::start(TOKEN);
    let url = server.create_repo(
        "infra",
        &[
            (
                "base/kustomization.yaml",
                "resources:\n- api.yaml\n- web.yaml\n- db.yaml\n",
            ),
            ("base/api.yaml", &workload("Deployment", "api", None)),
            ("base/web.yaml", &workload("Deployment", "web", None)),
            ("base/db.yaml", &workload("StatefulSet", "db", Some(2))),
            (SANDBOX, OVERLAY),
        ],
    );
    git(&server, &["branch", BRANCH, "main"]);
    (server, url)
}

fn patch(outputs: &Path, url: &str, flags: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_patch-kustomize"))
        .env_clear()
        .env("SBX_OUTPUTS_DIR", outputs)
        .env("T", TOKEN)
        .args(["--repo", url, "--git-token", "env:T", "--branch", BRANCH])
        .args(["--file", SANDBOX])
        .args(flags)
        .output()
        .unwrap()
}

fn output(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap()
}

/// Renders the branch's overlay with kustomize and applies its workloads to the API server, as
/// Argo CD would after a sync; returns the replica counts the API server then holds, by name.
fn sync(server: &GitServer, api: &KubeApiServer) -> BTreeMap<String, i64> {
    let tree = common::tree(server, BRANCH);
    let mut counts = BTreeMap::new();
    for doc in common::kustomize(&tree.path().join("env/sandbox"), BRANCH) {
        let object: serde_json::Value = serde_json::to_value(&doc).unwrap();
        let (status, body) = api.apply(&object, None);
        assert!(matches!(status, 200 | 201), "{body}");
        let name = object["metadata"]["name"].as_str().unwrap().to_owned();
        let (status, live) = api.get(&api.path_of(&object));
        assert_eq!(status, 200, "{live}");
        counts.insert(name, live["spec"]["replicas"].as_i64().unwrap());
    }
    counts
}

fn counts(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
    pairs.iter().map(|(n, c)| (n.to_string(), *c)).collect()
}

fn overlay(server: &GitServer) -> String {
    git(server, &["show", &format!("{BRANCH}:{SANDBOX}")])
}

#[test]
fn sleep_and_wake_give_the_committed_counts_on_the_api_server() {
    let (server, url) = infra();
    let api = KubeApiServer::start();
    api.create_namespace(NAMESPACE);
    let awake = counts(&[("sbx-api", 3), ("sbx-db", 2), ("sbx-web", 1)]);
    assert_eq!(sync(&server, &api), awake);

    // Sleep: one commit; the diff only adds (the record, the patches) and zeroes api's count.
    let out_dir = tempfile::tempdir().unwrap();
    let out = patch(out_dir.path(), &url, &["--sleep", "--sleep-reason", "idle"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(output(out_dir.path(), "changed"), "true");
    assert_eq!(output(out_dir.path(), "asleep"), "true");
    let since = output(out_dir.path(), "asleep-since");
    assert!(since.ends_with('Z') && since.len() == 20, "{since}");
    let asleep = overlay(&server);
    let diff = git(&server, &["diff", "-U0", "main", BRANCH, "--", SANDBOX]);
    let removed: Vec<&str> = diff
        .lines()
        .filter(|l| l.starts_with('-') && !l.starts_with("---"))
        .collect();
    assert_eq!(removed, ["-    count: 3"], "{diff}");
    assert!(asleep.contains("  - name: api   # the API takes the load\n    count: 0\n"));
    assert!(asleep.contains(&format!("sandbox-steps.io/asleep-since: \"{since}\"")));
    assert!(asleep.contains("sandbox-steps.io/replicas-before-sleep: \"api=3\""));
    assert_eq!(
        sync(&server, &api),
        counts(&[("sbx-api", 0), ("sbx-db", 0), ("sbx-web", 0)])
    );

    // Sleeping again changes nothing and commits nothing.
    let head = git(&server, &["rev-parse", BRANCH]);
    let again = tempfile::tempdir().unwrap();
    let out = patch(again.path(), &url, &["--sleep", "--sleep-reason", "night"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(output(again.path(), "changed"), "false");
    assert_eq!(output(again.path(), "asleep-since"), since);
    assert_eq!(git(&server, &["rev-parse", BRANCH]), head);

    // A workload added to the environment while it sleeps sleeps too (the patches are by kind).
    let worktree = tempfile::tempdir().unwrap();
    let clone = |args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(worktree.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    clone(&[
        "clone",
        "-q",
        "-b",
        BRANCH,
        server.repo_path("infra").to_str().unwrap(),
        ".",
    ]);
    std::fs::write(
        worktree.path().join("base/worker.yaml"),
        workload("Deployment", "worker", Some(4)),
    )
    .unwrap();
    std::fs::write(
        worktree.path().join("base/kustomization.yaml"),
        "resources:\n- api.yaml\n- web.yaml\n- db.yaml\n- worker.yaml\n",
    )
    .unwrap();
    clone(&["add", "-A"]);
    clone(&[
        "-c",
        "user.name=dev",
        "-c",
        "user.email=dev@example.com",
        "commit",
        "-qm",
        "worker",
    ]);
    clone(&["push", "-q", "origin", BRANCH]);
    assert_eq!(
        sync(&server, &api),
        counts(&[
            ("sbx-api", 0),
            ("sbx-db", 0),
            ("sbx-web", 0),
            ("sbx-worker", 0)
        ])
    );

    // Wake: the overlay is byte for byte what it was, and every count is back, including web's
    // default and the new worker's own.
    let woken = tempfile::tempdir().unwrap();
    let out = patch(woken.path(), &url, &["--wake"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(output(woken.path(), "changed"), "true");
    assert_eq!(output(woken.path(), "asleep"), "false");
    assert_eq!(output(woken.path(), "asleep-since"), "");
    assert_eq!(overlay(&server), OVERLAY);
    assert_eq!(
        sync(&server, &api),
        counts(&[
            ("sbx-api", 3),
            ("sbx-db", 2),
            ("sbx-web", 1),
            ("sbx-worker", 4)
        ])
    );
    let head = git(&server, &["rev-parse", BRANCH]);
    let out = patch(woken.path(), &url, &["--wake"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(output(woken.path(), "changed"), "false");
    assert_eq!(git(&server, &["rev-parse", BRANCH]), head);

    // --set-replicas: the entry changes, and so does the workload.
    let out = patch(woken.path(), &url, &["--set-replicas", "web=2,api=1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        sync(&server, &api),
        counts(&[
            ("sbx-api", 1),
            ("sbx-db", 2),
            ("sbx-web", 2),
            ("sbx-worker", 4)
        ])
    );
}

#[test]
fn bad_sleep_and_replica_flags_push_nothing() {
    let (server, url) = infra();
    let head = git(&server, &["rev-parse", BRANCH]);
    let long = format!("{}=1", "a".repeat(254));
    let cases: Vec<Vec<&str>> = vec![
        vec!["--sleep", "--wake"],
        vec!["--sleep", "--set-replicas", "api=1"],
        vec!["--sleep-reason", "idle"],
        vec!["--sleep", "--sleep-reason", "because;rm -rf /"],
        vec!["--set-replicas", "api=-1"],
        vec!["--set-replicas", "api=2147483648"],
        vec!["--set-replicas", "api"],
        vec!["--set-replicas", "Api=1"],
        vec!["--set-replicas", "../x=1"],
        vec!["--set-replicas", ";rm -rf /=1"],
        vec!["--set-replicas", "ápi=1"],
        vec!["--set-replicas", &long],
    ];
    for flags in cases {
        let dir = tempfile::tempdir().unwrap();
        let out = patch(dir.path(), &url, &flags);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {}", text(&out));
        assert_eq!(git(&server, &["rev-parse", BRANCH]), head, "{flags:?}");
    }
}
