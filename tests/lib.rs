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

/// (file, document) for every YAML document under workflow-templates/, files in name order (the
/// kustomizations that list them are kustomize's, not the cluster's).
pub fn manifests() -> Vec<(PathBuf, Value)> {
    fn yaml_files(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                yaml_files(&path, found);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) && path.file_name() != Some("kustomization.yaml".as_ref())
            {
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

/// Prepares a fresh API server as installing Argo Workflows, Argo Events and Argo CD would: their
/// CRDs (from cluster/build.sh's cache), and the namespaces `argo` and `argo-events`.
pub fn prepare_for_the_library(server: &testkit::KubeApiServer) {
    let mut crds: Vec<PathBuf> = std::fs::read_dir(testkit::cluster_cache().join("crds"))
        .expect("CRDs: run `bash cluster/build.sh`")
        .map(|e| e.unwrap().path())
        .collect();
    crds.sort();
    server.install_crds(&crds);
    server.create_namespace("argo");
    server.create_namespace("argo-events");
    // Argo CD's namespace (its install makes it): wait-argocd-app's Role lives there.
    server.create_namespace("argocd");
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
        step(drop_db::NAME, drop_db::Args::command(), drop_db::OUTPUTS),
        step(
            sweep_sandboxes::NAME,
            sweep_sandboxes::Args::command(),
            sweep_sandboxes::OUTPUTS,
        ),
        step(
            report_status::NAME,
            report_status::Args::command(),
            report_status::OUTPUTS,
        ),
        step(
            wait_argocd_app::NAME,
            wait_argocd_app::Args::command(),
            wait_argocd_app::OUTPUTS,
        ),
        step(
            wait_image::NAME,
            wait_image::Args::command(),
            wait_image::OUTPUTS,
        ),
        step(
            admit_sandbox::NAME,
            admit_sandbox::Args::command(),
            admit_sandbox::OUTPUTS,
        ),
        step(run_sql::NAME, run_sql::Args::command(), run_sql::OUTPUTS),
        step(mask_db::NAME, mask_db::Args::command(), mask_db::OUTPUTS),
    ]
}

/// The real GitHub `pull_request` webhook payloads (npm `@octokit/webhooks-examples`, installed by
/// `npm ci --prefix tests`), each as the GitHub event source emits it, `{headers, body}`, rewritten
/// to the library's repository (`acme/platform`) and with their label renamed to `create-sandbox`.
pub fn pull_request_events() -> Vec<Value> {
    let examples = webhook_examples("pull_request");
    assert!(examples.len() >= 20, "{} examples", examples.len());
    let ours = |body: &Value, relabel: bool| {
        let mut body = body.clone();
        body["repository"]["full_name"] = "acme/platform".into();
        body["repository"]["name"] = "platform".into();
        if relabel {
            body = relabelled(&body);
        }
        serde_json::json!({"headers": {"X-Github-Event": ["pull_request"]}, "body": body})
    };
    examples
        .iter()
        .map(|b| ours(b, false))
        .chain(examples.iter().map(|b| ours(b, true)))
        .collect()
}

/// GitHub's example payloads of webhook event `name` (npm `@octokit/webhooks-examples`).
pub fn webhook_examples(name: &str) -> Vec<Value> {
    let index =
        repo_root().join("tests/node_modules/@octokit/webhooks-examples/api.github.com/index.json");
    let text = std::fs::read_to_string(&index).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; install the test data with `npm ci --prefix tests`",
            index.display()
        )
    });
    let all: Vec<Value> = serde_json::from_str(&text).unwrap();
    all.into_iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no {name} examples"))["examples"]
        .as_array()
        .unwrap()
        .clone()
}

/// A payload with GitHub's example label `bug` renamed to `create-sandbox`.
pub fn relabelled(body: &Value) -> Value {
    let text = body
        .to_string()
        .replace("\"name\":\"bug\"", "\"name\":\"create-sandbox\"");
    serde_json::from_str(&text).unwrap()
}

/// What the Sensor `sensor` (its file under workflow-templates/events/) does with each event, as
/// Argo Events' own code decides it (cluster/sensor-check): for each event, whether it fires and
/// the Workflows its triggers submit.
pub fn sensor_check(sensor: &str, events: &[Value]) -> Vec<(bool, Vec<Value>)> {
    sensor_check_file(
        &repo_root().join(format!("workflow-templates/events/{sensor}.yaml")),
        events,
    )
}

/// [`sensor_check`] of the Sensor in `file`.
pub fn sensor_check_file(file: &Path, events: &[Value]) -> Vec<(bool, Vec<Value>)> {
    let sensor = file.display();
    let dir = tempfile::tempdir().unwrap();
    let events_file = dir.path().join("events.json");
    std::fs::write(&events_file, serde_json::to_vec(events).unwrap()).unwrap();
    let out = std::process::Command::new(testkit::cluster_tool("sensor-check"))
        .arg(file)
        .arg(&events_file)
        .output()
        .expect("run sensor-check");
    assert!(
        out.status.success(),
        "sensor-check {sensor}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<(bool, Vec<Value>)> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let result: Value = serde_json::from_str(line).unwrap();
            let workflows = result["workflows"].as_array().cloned().unwrap_or_default();
            (result["fired"] == true, workflows)
        })
        .collect();
    assert_eq!(results.len(), events.len());
    results
}

/// The real `pull_request` event (npm `@octokit/webhooks-examples`, as [`pull_request_events`]
/// gives it) with action `action` that fires Sensor `sensor`, renumbered to `pr_number`.
pub fn sensor_event(sensor: &str, action: &str, pr_number: u64) -> Value {
    let events = pull_request_events();
    let results = sensor_check(sensor, &events);
    let mut event = events
        .iter()
        .zip(&results)
        .find(|(event, (fired, _))| *fired && event["body"]["action"] == action)
        .map(|(event, _)| event.clone())
        .unwrap_or_else(|| panic!("{sensor}: no {action} event fires it"));
    event["body"]["pull_request"]["number"] = pr_number.into();
    event["body"]["number"] = pr_number.into();
    event
}

/// GitHub's `issue_comment` example (action `created`, npm `@octokit/webhooks-examples`) as a
/// comment `text` (id `comment_id`) on pull request `pr_number` of `acme/platform`, which carries
/// the label `create-sandbox`.
pub fn comment_event(pr_number: u64, comment_id: u64, text: &str) -> Value {
    let example = webhook_examples("issue_comment")
        .into_iter()
        .find(|e| e["action"] == "created")
        .expect("a created issue_comment example");
    let mut body = on_pull_request(&relabelled(&example), "acme/platform");
    body["issue"]["number"] = pr_number.into();
    body["comment"]["id"] = comment_id.into();
    body["comment"]["body"] = text.into();
    body["repository"]["name"] = "platform".into();
    serde_json::json!({"headers": {"X-Github-Event": ["issue_comment"]}, "body": body})
}

/// An `issue_comment` payload made a pull request's (GitHub adds `issue.pull_request`) of
/// `repository`.
pub fn on_pull_request(body: &Value, repository: &str) -> Value {
    let mut body = body.clone();
    let number = body["issue"]["number"].clone();
    body["repository"]["full_name"] = repository.into();
    body["issue"]["pull_request"] = serde_json::json!({
        "url": format!("https://api.github.com/repos/{repository}/pulls/{number}"),
        "html_url": format!("https://github.com/{repository}/pull/{number}"),
        "diff_url": format!("https://github.com/{repository}/pull/{number}.diff"),
        "patch_url": format!("https://github.com/{repository}/pull/{number}.patch"),
        "merged_at": null
    });
    body
}

/// The Workflow each Sensor submits for a pull request numbered `pr_number`, in this order:
/// create-sandbox (opened with the label), delete-sandbox (closed), update-sandbox (a push),
/// extend-sandbox (`/extend`), wake-sandbox (`/wake`), as Argo Events builds it.
pub fn sensor_workflows(pr_number: u64) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (sensor, wanted) in [
        ("create-sandbox-sensor", "opened"),
        ("delete-sandbox-sensor", "closed"),
        ("update-sandbox-sensor", "synchronize"),
        ("extend-sandbox-sensor", "/extend"),
        ("wake-sandbox-sensor", "/wake"),
    ] {
        let event = if wanted.starts_with('/') {
            comment_event(pr_number, 2_000_000_000_123, wanted)
        } else {
            sensor_event(sensor, wanted, pr_number)
        };
        let (fired, workflows) = sensor_check(sensor, &[event]).remove(0);
        assert!(fired, "{sensor}: the renumbered event no longer fires it");
        assert_eq!(workflows.len(), 1, "{sensor}: one trigger");
        out.push((
            sensor.trim_end_matches("-sensor").to_owned(),
            workflows[0].clone(),
        ));
    }
    out
}

/// What a Sensor's argoWorkflow trigger does with the Workflow it built: the Argo CLI, with the
/// Sensor's service-account token, validates it against the ClusterWorkflowTemplates on the
/// server and submits it (argo-events pkg/sensors/triggers/argo-workflow: `argo -n argo submit
/// <file>`); the submitted Workflow's name.
pub fn submit_as_sensor(server: &testkit::KubeApiServer, workflow: &Value) -> String {
    let token = server.service_account_token("argo-events", "sandbox-steps-sensor");
    let kubeconfig = server.kubeconfig("sensor", &token);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("workflow.yaml");
    std::fs::write(&file, serde_yaml::to_string(workflow).unwrap()).unwrap();
    let out = std::process::Command::new(testkit::cluster_tool("argo"))
        .args(["-n", "argo", "submit", "-o", "name"])
        .arg(&file)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .env_remove("KUBECONFIG")
        .env("ARGO_NAMESPACE", "argo")
        .output()
        .expect("run argo");
    let name = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success(),
        "argo submit: {name}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    name
}

/// A double of the `terraform` CLI (a shell script, for busybox's sh): it does to the file system
/// what Terraform does (`init` creates `.terraform/` and `.terraform.lock.hcl` in the working
/// directory, `workspace` keeps workspaces under `terraform.tfstate.d/`, apply and destroy write
/// the workspace's state) and logs each call to `$TERRAFORM_LOG` (default stdout). Terraform
/// itself cannot be built here: its module's zip lacks the nested backend modules its go.mod
/// replaces with local paths.
pub const TERRAFORM_DOUBLE: &str = r#"#!/bin/sh
set -eu
echo "terraform $*" >> "${TERRAFORM_LOG:-/dev/stdout}"
case "$1" in
  init) mkdir -p .terraform && echo lock > .terraform.lock.hcl ;;
  workspace)
    case "$2" in
      select)
        if [ "$3" = "-or-create=true" ]; then mkdir -p "terraform.tfstate.d/$4"; echo "$4" > .terraform/environment
        else echo "$3" > .terraform/environment; fi ;;
      delete) rm -rf "terraform.tfstate.d/$3" ;;
    esac ;;
  apply|destroy)
    ws=$(cat .terraform/environment)
    [ "$ws" = "$TF_VAR_environment" ] || { echo "workspace $ws is not $TF_VAR_environment" >&2; exit 1; }
    echo "$1 $TF_VAR_environment $TF_VAR_namespace" > "terraform.tfstate.d/$ws/terraform.tfstate" ;;
esac
"#;
