//! What both test files need: a real kustomize rendering an overlay.

use std::path::Path;
use std::process::Command;

use serde_yaml::Value;

/// `kubectl kustomize DIR`'s documents; panics with kustomize's error (and `context`) when it fails.
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
