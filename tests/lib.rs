//! Workspace-level checks (the tests of this package): every step, as its binary defines it.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use serde_json::Value;

/// The repository's root (this package lives in `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// (file, document) for every YAML document under workflow-templates/, files in name order.
pub fn manifests() -> Vec<(PathBuf, Value)> {
    fn yaml_files(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                yaml_files(&path, found);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                found.push(path);
            }
        }
    }
    let mut files = Vec::new();
    yaml_files(&repo_root().join("workflow-templates"), &mut files);
    files.sort();
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            if !value.is_null() {
                docs.push((file.clone(), value));
            }
        }
    }
    docs
}

/// A step's interface, from its own code.
pub struct Step {
    pub name: &'static str,
    /// Its clap command, with the environment variable of every flag.
    pub command: clap::Command,
    /// The files it writes in `--outputs-dir`.
    pub outputs: &'static [&'static str],
}

/// Every step of the workspace.
pub fn steps() -> Vec<Step> {
    let step = |name, command, outputs| Step {
        name,
        command: step_kit::command_with_env(command),
        outputs,
    };
    vec![
        step(
            validate_params::NAME,
            validate_params::Args::command(),
            validate_params::OUTPUTS,
        ),
        step(
            create_branch::NAME,
            create_branch::Args::command(),
            create_branch::OUTPUTS,
        ),
        step(
            cleanup_branch::NAME,
            cleanup_branch::Args::command(),
            cleanup_branch::OUTPUTS,
        ),
        step(
            wait_workflow::NAME,
            wait_workflow::Args::command(),
            wait_workflow::OUTPUTS,
        ),
        step(
            create_argocd_app::NAME,
            create_argocd_app::Args::command(),
            create_argocd_app::OUTPUTS,
        ),
        step(
            patch_kustomize::NAME,
            patch_kustomize::Args::command(),
            patch_kustomize::OUTPUTS,
        ),
        step(
            purge_secrets::NAME,
            purge_secrets::Args::command(),
            purge_secrets::OUTPUTS,
        ),
        step(
            delete_argocd_app::NAME,
            delete_argocd_app::Args::command(),
            delete_argocd_app::OUTPUTS,
        ),
        step(
            copy_bucket::NAME,
            copy_bucket::Args::command(),
            copy_bucket::OUTPUTS,
        ),
        step(
            restore_db::NAME,
            restore_db::Args::command(),
            restore_db::OUTPUTS,
        ),
    ]
}

/// The Workflow each Sensor trigger submits, its parameters filled as the trigger fills them
/// (argo-events applies each `dest` to the trigger's resource) from a pull-request event.
pub fn sensor_workflows(pr_number: u64) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (file, sensor) in manifests() {
        if sensor["kind"] != "Sensor" {
            continue;
        }
        for trigger in sensor["spec"]["triggers"].as_array().unwrap() {
            let argo_workflow = &trigger["template"]["argoWorkflow"];
            let mut workflow = argo_workflow["source"]["resource"].clone();
            for parameter in argo_workflow["parameters"].as_array().unwrap() {
                let dest = parameter["dest"].as_str().unwrap();
                let value = match parameter["src"]["dataKey"].as_str() {
                    Some("body.pull_request.number") => pr_number.to_string(),
                    Some("body.pull_request.head.ref") => "feature/lint-me".to_owned(),
                    Some("body.repository.full_name") => "acme/platform".to_owned(),
                    Some("body.repository.name") => "platform".to_owned(),
                    Some(other) => panic!("{}: unexpected dataKey {other}", file.display()),
                    None => format!("{pr_number}-"),
                };
                if dest == "metadata.generateName" {
                    assert_eq!(parameter["operation"], "append");
                    let name = workflow["metadata"]["generateName"].as_str().unwrap();
                    workflow["metadata"]["generateName"] = format!("{name}{value}").into();
                } else {
                    let index: usize = dest
                        .strip_prefix("spec.arguments.parameters.")
                        .and_then(|d| d.strip_suffix(".value"))
                        .unwrap_or_else(|| panic!("unexpected dest {dest}"))
                        .parse()
                        .unwrap();
                    workflow["spec"]["arguments"]["parameters"][index]["value"] = value.into();
                }
            }
            let name = sensor["metadata"]["name"].as_str().unwrap().to_owned();
            out.push((name, workflow));
        }
    }
    assert_eq!(out.len(), 2, "one trigger per Sensor, two Sensors");
    out
}
