//! What the test files share: a real kustomize rendering an overlay, and the infra repository
//! of the harness's git server. Not every file uses every helper (hence `allow(dead_code)`).

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_yaml::Value;
use testkit::GitServer;

/// `git ARGS` in the harness's repository `infra`; its stdout (panics with git's error).
#[allow(dead_code)]
pub fn git(server: &GitServer, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(server.repo_path("infra"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The tree of `branch` of `infra`, unpacked in a temporary directory (`git archive`).
#[allow(dead_code)]
pub fn tree(server: &GitServer, branch: &str) -> tempfile::TempDir {
    let tree = tempfile::tempdir().unwrap();
    let tar = tree.path().join("tree.tar");
    git(server, &["archive", "-o", tar.to_str().unwrap(), branch]);
    let untar = Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .current_dir(tree.path())
        .status()
        .unwrap();
    assert!(untar.success());
    tree
}

/// Starts every command at once (stdout dropped, stderr kept) and waits for all: each must exit 0.
#[allow(dead_code)]
pub fn all_succeed_at_once(commands: Vec<Command>) {
    let children: Vec<_> = commands
        .into_iter()
        .map(|mut cmd| {
            cmd.stdout(Stdio::null())
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
}

/// A step's stdout and stderr, for assertion messages.
#[allow(dead_code)]
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `kubectl kustomize DIR`'s documents; panics with kustomize's error (and `context`) when it fails.
#[allow(dead_code)]
pub fn kustomize(dir: &Path, context: &str) -> Vec<Value> {
    let kubectl = testkit::find_binary(
        "kubectl",
        &[],
        "install kubectl (Debian: apt-get install kubernetes-client)",
    );
    let out = Command::new(kubectl)
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl kustomize failed: {}\n{context}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_yaml::Deserializer::from_slice(&out.stdout)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}
