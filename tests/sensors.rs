//! The Sensors' data filters, evaluated as Argo Events does (GJSON paths, then each value a
//! regular expression matched against the result; every filter of a dependency must pass) against
//! real GitHub `pull_request` payloads from the npm package `@octokit/webhooks-examples`
//! (`npm ci --prefix tests`, which `.ci/run` does), as they are and with their label renamed to
//! `create-sandbox`. What fires must be exactly what the lifecycle wants:
//! - create: an open pull request with the label, opened or reopened, or the label just added;
//! - delete: closed, or the label just removed.

use workspace_tests::repo_root;

use serde_json::{json, Value};

const LABEL: &str = "create-sandbox";

/// The real `pull_request` webhook payloads.
fn payloads() -> Vec<Value> {
    let index =
        repo_root().join("tests/node_modules/@octokit/webhooks-examples/api.github.com/index.json");
    let text = std::fs::read_to_string(&index).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; install the test data with `npm ci --prefix tests`",
            index.display()
        )
    });
    let all: Vec<Value> = serde_json::from_str(&text).unwrap();
    let examples = all
        .into_iter()
        .find(|e| e["name"] == "pull_request")
        .expect("pull_request examples")["examples"]
        .as_array()
        .unwrap()
        .clone();
    assert!(examples.len() >= 20, "{} examples", examples.len());
    // Each as it is, and with its label(s) renamed to ours.
    let relabeled = examples.iter().map(|p| {
        let text = p
            .to_string()
            .replace("\"name\":\"bug\"", &format!("\"name\":\"{LABEL}\""));
        serde_json::from_str::<Value>(&text).unwrap()
    });
    examples.clone().into_iter().chain(relabeled).collect()
}

fn sensor(name: &str) -> Value {
    let text =
        std::fs::read_to_string(repo_root().join(format!("workflow-templates/events/{name}.yaml")))
            .unwrap();
    serde_yaml::from_str(&text).unwrap()
}

/// Whether the Sensor's (single) dependency passes `event` ({headers, body}, what the GitHub
/// event source emits).
fn fires(sensor: &Value, event: &Value) -> bool {
    let dependencies = sensor["spec"]["dependencies"].as_array().unwrap();
    assert_eq!(dependencies.len(), 1, "one dependency per Sensor");
    let filters = &dependencies[0]["filters"];
    assert!(
        filters["dataLogicalOperator"].is_null() || filters["dataLogicalOperator"] == "and",
        "filters are ANDed"
    );
    let event_text = event.to_string();
    filters["data"].as_array().unwrap().iter().all(|filter| {
        assert_eq!(
            filter["type"], "string",
            "only string filters are evaluated here"
        );
        let result = gjson::get(&event_text, filter["path"].as_str().unwrap());
        // Argo Events: a path that resolves to nothing fails the filter.
        result.exists()
            && filter["value"].as_array().unwrap().iter().any(|pattern| {
                // Like Go GJSON's String(): a string's value, other results as raw JSON.
                regex::Regex::new(pattern.as_str().unwrap())
                    .unwrap()
                    .is_match(result.str())
            })
    })
}

fn wants_create(body: &Value) -> bool {
    let open = body["pull_request"]["state"] == "open";
    let has_label = body["pull_request"]["labels"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["name"] == LABEL);
    let action = body["action"].as_str().unwrap();
    open && has_label
        && (matches!(action, "opened" | "reopened")
            || (action == "labeled" && body["label"]["name"] == LABEL))
}

fn wants_delete(body: &Value) -> bool {
    let action = body["action"].as_str().unwrap();
    action == "closed" || (action == "unlabeled" && body["label"]["name"] == LABEL)
}

#[test]
fn sensors_fire_exactly_for_the_lifecycle_events() {
    let (create, delete) = (
        sensor("create-sandbox-sensor"),
        sensor("delete-sandbox-sensor"),
    );
    let mut fired = (0, 0);
    for body in payloads() {
        let event = json!({"headers": {"X-Github-Event": ["pull_request"]}, "body": body});
        let what = format!(
            "{} on #{} ({}, labels {:?}, label {})",
            body["action"],
            body["pull_request"]["number"],
            body["pull_request"]["state"],
            body["pull_request"]["labels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["name"].as_str().unwrap())
                .collect::<Vec<_>>(),
            body["label"]["name"]
        );
        assert_eq!(
            fires(&create, &event),
            wants_create(&body),
            "create: {what}"
        );
        assert_eq!(
            fires(&delete, &event),
            wants_delete(&body),
            "delete: {what}"
        );
        fired.0 += usize::from(wants_create(&body));
        fired.1 += usize::from(wants_delete(&body));
    }
    // The payloads exercise both sides of both Sensors.
    assert!(fired.0 >= 3 && fired.1 >= 3, "{fired:?}");
}

/// The parameters each trigger takes from the event resolve, on every payload, to what the
/// workflow's parameter of that index means.
#[test]
fn trigger_parameters_resolve_on_real_payloads() {
    for name in ["create-sandbox-sensor", "delete-sandbox-sensor"] {
        let sensor = sensor(name);
        for trigger in sensor["spec"]["triggers"].as_array().unwrap() {
            let workflow_trigger = &trigger["template"]["argoWorkflow"];
            let arguments = workflow_trigger["source"]["resource"]["spec"]["arguments"]
                ["parameters"]
                .as_array()
                .unwrap();
            for parameter in workflow_trigger["parameters"].as_array().unwrap() {
                let Some(key) = parameter["src"]["dataKey"].as_str() else {
                    continue; // the generateName template
                };
                let dest = parameter["dest"].as_str().unwrap();
                let index: usize = dest
                    .strip_prefix("spec.arguments.parameters.")
                    .and_then(|d| d.strip_suffix(".value"))
                    .unwrap()
                    .parse()
                    .unwrap();
                let argument = arguments[index]["name"].as_str().unwrap();
                let expected_key = match argument {
                    "pr-number" => "body.pull_request.number",
                    "head-ref" => "body.pull_request.head.ref",
                    "repository" => "body.repository.full_name",
                    "repository-name" => "body.repository.name",
                    other => panic!("{name}: unexpected argument {other}"),
                };
                assert_eq!(key, expected_key, "{name}: {argument}");
                for body in payloads() {
                    let event = json!({"body": body}).to_string();
                    let value = gjson::get(&event, key);
                    assert!(value.exists() && !value.str().is_empty(), "{name}: {key}");
                }
            }
        }
    }
}
