//! Each step template's container, with its parameters replaced by sample values (their defaults,
//! or a sample of the kind a workflow passes), parses with the binary it runs: the variables are
//! flags, their values are accepted, every required flag is given. One test function: it sets
//! process environment variables, which clap reads.

use serde_json::Value;

/// A value of the kind the workflows pass for a parameter without a default.
fn sample(parameter: &str) -> &'static str {
    match parameter {
        "repo" | "source-repo" => "https://github.com/acme/infra.git",
        "branch" | "target-revision" | "environment" => "sbx-pr-42",
        "pr-number" => "42",
        "head-ref" => "feature/JIRA-123",
        "repository" | "github-repo" => "acme/platform",
        "name" => "sbx-pr-42",
        "namespace" | "dest-namespace" => "apps-sbx-pr-42",
        "path" => "apps/sandboxes",
        "source-path" => "kustomize/environments/sandbox",
        "file" => "kustomize/environments/sandbox/kustomization.yaml",
        "vault-addr" => "https://vault.acme.dev:8200",
        "source" => "gs://acme-integration/documents",
        "dest" => "gs://acme-sbx-pr-42/documents",
        "backup" => "gs://acme-integration-backups/nightly/",
        "database" => "sbx_pr_42",
        "image" => "europe-docker.pkg.dev/acme/apps/web:sha-1a2b3c4",
        "state" => "ready",
        "database-url" => "vault:secret/sandboxes/sbx-pr-42/db#url",
        other => panic!("no sample for the required parameter {other}: add one"),
    }
}

/// `text` with every `{{inputs.parameters.X}}` replaced by X's value.
fn substitute(text: &str, values: &std::collections::BTreeMap<String, String>) -> String {
    let mut out = text.to_owned();
    for (name, value) in values {
        out = out.replace(&format!("{{{{inputs.parameters.{name}}}}}"), value);
    }
    assert!(!out.contains("{{"), "unresolved parameter in {text:?}");
    out
}

#[test]
fn step_templates_parse_with_their_binaries() {
    let dir = workspace_tests::repo_root().join("workflow-templates/steps");
    let mut checked = 0;
    for step in workspace_tests::steps() {
        let file = dir.join(format!("{}.yaml", step.name));
        let doc: Value = serde_yaml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let template = &doc["spec"]["templates"][0];
        let mut values = std::collections::BTreeMap::new();
        for p in template["inputs"]["parameters"].as_array().unwrap() {
            let name = p["name"].as_str().unwrap();
            let value = match (&p["enum"], p["value"].as_str()) {
                (Value::Array(options), _) => options[0].as_str().unwrap().to_owned(),
                (_, Some(default)) => default.to_owned(),
                (_, None) => sample(name).to_owned(),
            };
            values.insert(name.to_owned(), value);
        }
        let env: Vec<(String, String)> = template["container"]["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["valueFrom"].is_null())
            .map(|e| {
                (
                    e["name"].as_str().unwrap().to_owned(),
                    substitute(e["value"].as_str().unwrap(), &values),
                )
            })
            .collect();
        for (name, value) in &env {
            std::env::set_var(name, value);
        }
        // The step's own command, as the runner builds it (empty variables count as unset).
        let command = step_kit::command_with_env(step.command.clone());
        let result = command.try_get_matches_from([step.name]);
        for (name, _) in &env {
            std::env::remove_var(name);
        }
        if let Err(e) = result {
            panic!(
                "{}: {} does not parse with these variables {env:?}:\n{e}",
                file.display(),
                step.name
            );
        }
        checked += 1;
    }
    assert!(checked >= 8, "{checked} step templates checked");
}
