//! Argo's own validator: `argo lint --offline` of Argo Workflows (the CLI cluster/build.sh builds at
//! the version cluster/versions.env pins) over every ClusterWorkflowTemplate of the library and over
//! the Workflows the Sensors create, resolved against those templates. Any finding fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use workspace_tests::{manifests, repo_root, sensor_workflows};

fn argo() -> PathBuf {
    testkit::cluster_tool("argo")
}

/// Runs `argo lint --offline` on `files`; (success, output).
fn lint(files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(argo())
        .args(["lint", "--offline", "--output", "simple"])
        .args(files)
        .env("NO_COLOR", "1")
        .output()
        .expect("run argo lint");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The library's workflow files (every ClusterWorkflowTemplate: steps/ and workflows/).
fn template_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = manifests()
        .into_iter()
        .filter(|(_, doc)| doc["kind"] == "ClusterWorkflowTemplate")
        .map(|(file, _)| file)
        .collect();
    files.dedup();
    assert!(files.len() >= 14, "{files:?}");
    files
}

fn write_yaml(dir: &Path, name: &str, value: &Value) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, serde_yaml::to_string(value).unwrap()).unwrap();
    path
}

#[test]
fn argo_lint_passes_every_workflow_template() {
    let (ok, output) = lint(&template_files());
    assert!(ok, "argo lint:\n{output}");
    assert!(output.contains("no linting errors"), "{output}");
}

#[test]
fn argo_lint_passes_the_workflows_the_sensors_submit() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = template_files();
    for (sensor, workflow) in sensor_workflows(42) {
        files.push(write_yaml(dir.path(), &sensor, &workflow));
    }
    let (ok, output) = lint(&files);
    assert!(ok, "argo lint:\n{output}");
}

/// The check has teeth: what Argo v4 refuses (the singular `mutex` it removed, a reference to a
/// task that does not exist) fails it.
#[test]
fn argo_lint_fails_on_what_argo_refuses() {
    let create = repo_root().join("workflow-templates/workflows/create-sandbox.yaml");
    let text = std::fs::read_to_string(&create).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let others: Vec<PathBuf> = template_files()
        .into_iter()
        .filter(|f| f != &create)
        .collect();
    for (what, broken) in [
        (
            "unknown field \"spec.synchronization.mutex\"",
            text.replace("    mutexes:\n      - name: ", "    mutex:\n        name: "),
        ),
        (
            "failed to resolve {{tasks.validat.",
            text.replacen("{{tasks.validate.", "{{tasks.validat.", 1),
        ),
    ] {
        assert_ne!(broken, text, "the mutation applies");
        let file = dir.path().join("create-sandbox.yaml");
        std::fs::write(&file, broken).unwrap();
        let mut files = others.clone();
        files.push(file);
        let (ok, output) = lint(&files);
        assert!(!ok && output.contains(what), "{what}:\n{output}");
    }
}
