//! The Sensors, run by Argo Events' own code (cluster/sensor-check: its dependency filters and its
//! trigger parameters, the version cluster/versions.env pins) on real GitHub `pull_request`
//! payloads from the npm package `@octokit/webhooks-examples`, as they are and with their label
//! renamed to `create-sandbox`. What fires must be exactly what the lifecycle wants:
//! - create: an open pull request of the repository with the label, opened or reopened, or the
//!   label just added;
//! - delete: closed, or the label just removed;
//! - update: commits pushed (`synchronize`) to an open pull request with the label;
//! - neither for another repository or another kind of GitHub event;
//!
//! and what they submit must carry the pull request's own values.

use serde_json::{json, Value};
use workspace_tests::{
    on_pull_request, pull_request_events, relabelled, sensor_check, webhook_examples,
};

const LABEL: &str = "create-sandbox";

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

fn wants_update(body: &Value) -> bool {
    let has_label = body["pull_request"]["labels"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["name"] == LABEL);
    body["action"] == "synchronize" && body["pull_request"]["state"] == "open" && has_label
}

fn wants_delete(body: &Value) -> bool {
    let action = body["action"].as_str().unwrap();
    action == "closed" || (action == "unlabeled" && body["label"]["name"] == LABEL)
}

fn describe(body: &Value) -> String {
    format!(
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
    )
}

#[test]
fn sensors_fire_exactly_for_the_lifecycle_events() {
    let events = pull_request_events();
    let mut fired = std::collections::BTreeMap::new();
    for (sensor, wants) in [
        ("create-sandbox-sensor", wants_create as fn(&Value) -> bool),
        ("delete-sandbox-sensor", wants_delete),
        ("update-sandbox-sensor", wants_update),
    ] {
        for (event, (fires, _)) in events.iter().zip(sensor_check(sensor, &events)) {
            let body = &event["body"];
            assert_eq!(fires, wants(body), "{sensor}: {}", describe(body));
            *fired.entry(sensor).or_insert(0) += usize::from(fires);
        }
    }
    // The payloads exercise both sides of every Sensor (GitHub's examples hold one push).
    assert!(
        fired["create-sandbox-sensor"] >= 3
            && fired["delete-sandbox-sensor"] >= 3
            && fired["update-sandbox-sensor"] >= 1,
        "{fired:?}"
    );
}

/// Another repository's pull requests, and events that are not `pull_request` ones (a webhook
/// configured for more), never start or remove a sandbox.
#[test]
fn other_repositories_and_other_events_fire_nothing() {
    let events = pull_request_events();
    let mut strangers = Vec::new();
    for event in &events {
        let mut other_repo = event.clone();
        other_repo["body"]["repository"]["full_name"] = "acme/platform-fork".into();
        strangers.push(other_repo);
        let mut other_kind = event.clone();
        other_kind["headers"]["X-Github-Event"] = json!(["pull_request_review"]);
        strangers.push(other_kind);
    }
    for sensor in [
        "create-sandbox-sensor",
        "delete-sandbox-sensor",
        "update-sandbox-sensor",
    ] {
        let results = sensor_check(sensor, &strangers);
        let fired: Vec<String> = strangers
            .iter()
            .zip(results)
            .filter(|(_, (fires, _))| *fires)
            .map(|(e, _)| format!("{} {}", e["headers"], describe(&e["body"])))
            .collect();
        assert!(fired.is_empty(), "{sensor} fired for {fired:?}");
    }
}

/// The Workflow each trigger submits carries the pull request's own values, in the parameters
/// the lifecycle workflows declare; the generated name holds the number as digits, also past a
/// million (a JSON number renders as `1e+06` in a Go template unless converted).
#[test]
fn the_submitted_workflows_carry_the_pull_request() {
    let mut events = pull_request_events();
    for event in events.iter_mut().step_by(3) {
        event["body"]["pull_request"]["number"] = 1_000_000.into();
    }
    for sensor in [
        "create-sandbox-sensor",
        "delete-sandbox-sensor",
        "update-sandbox-sensor",
    ] {
        let workflow_name = sensor.trim_end_matches("-sensor");
        let mut checked = 0;
        for (event, (fires, workflows)) in events.iter().zip(sensor_check(sensor, &events)) {
            if !fires {
                continue;
            }
            let body = &event["body"];
            assert_eq!(workflows.len(), 1, "{sensor}: one trigger");
            let workflow = &workflows[0];
            let number = body["pull_request"]["number"].as_u64().unwrap();
            assert_eq!(
                workflow["metadata"]["generateName"],
                format!("{workflow_name}-pr-{number}-"),
                "{sensor}"
            );
            assert_eq!(workflow["metadata"]["namespace"], "argo");
            assert_eq!(
                workflow["spec"]["workflowTemplateRef"],
                json!({"name": workflow_name, "clusterScope": true})
            );
            let parameters: Vec<(String, String)> = workflow["spec"]["arguments"]["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p["name"].as_str().unwrap().to_owned(),
                        p["value"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            let mut expected: Vec<(String, String)> = [
                ("pr-number", number.to_string()),
                (
                    "head-ref",
                    body["pull_request"]["head"]["ref"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                ),
                ("repository", "acme/platform".to_owned()),
                ("repository-name", "platform".to_owned()),
            ]
            .map(|(n, v)| (n.to_owned(), v))
            .to_vec();
            // The head commit: the build create-sandbox and update-sandbox deploy.
            if !sensor.starts_with("delete") {
                expected.push((
                    "head-sha".to_owned(),
                    body["pull_request"]["head"]["sha"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                ));
            }
            // When it asked: the order of admit-sandbox's queue.
            if sensor.starts_with("create") {
                expected.push((
                    "requested-at".to_owned(),
                    body["pull_request"]["updated_at"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                ));
            }
            assert_eq!(parameters, expected, "{sensor}: {}", describe(body));
            checked += 1;
        }
        let least = if sensor.starts_with("update") { 1 } else { 3 };
        assert!(checked >= least, "{sensor}: {checked}");
    }
}

/// `/extend` and `/wake`: each command's Sensor fires exactly for a created comment whose first
/// word is its command (report-status's own reading, `github::command_of`), on an open pull
/// request (not an issue) of the repository carrying the label, and submits its workflow with the
/// pull request, the repository and the comment's id (past 2^32, as GitHub's ids are; wake-sandbox
/// also the repository's name for its mutex and the comment's time for its place in the queue);
/// the lifecycle Sensors never fire for a comment, nor the command Sensors for a pull_request
/// event. GitHub's issue_comment examples, with their bodies, labels and repository varied.
#[test]
fn commands_fire_exactly_for_their_word_on_a_labelled_pull_request() {
    const COMMENT_ID: u64 = 2_000_000_000_123;
    let mut events = Vec::new();
    for example in webhook_examples("issue_comment") {
        for text in [
            "/extend",
            " /extend\r\nstill reviewing",
            "/extend one more day",
            "/extended",
            "please /extend",
            "/wake",
            "/wake\tplease",
            "/wakeup",
            "LGTM",
        ] {
            for (pull, label, repository, state) in [
                (true, true, "acme/platform", "open"),
                (false, true, "acme/platform", "open"),
                (true, false, "acme/platform", "open"),
                (true, true, "acme/platform-fork", "open"),
                (true, true, "acme/platform", "closed"),
            ] {
                let mut body = if label {
                    relabelled(&example)
                } else {
                    example.clone()
                };
                body["repository"]["full_name"] = repository.into();
                if pull {
                    body = on_pull_request(&body, repository);
                } else if let Some(issue) = body["issue"].as_object_mut() {
                    issue.remove("pull_request");
                }
                body["issue"]["state"] = state.into();
                body["comment"]["body"] = text.into();
                body["comment"]["id"] = COMMENT_ID.into();
                events
                    .push(json!({"headers": {"X-Github-Event": ["issue_comment"]}, "body": body}));
            }
        }
    }
    for (command, workflow_name) in [
        (github::EXTEND_COMMAND, "extend-sandbox"),
        (github::WAKE_COMMAND, "wake-sandbox"),
    ] {
        let sensor = format!("{workflow_name}-sensor");
        let wants = |body: &Value| {
            body["action"] == "created"
                && body["issue"]["state"] == "open"
                && body["issue"].get("pull_request").is_some()
                && body["repository"]["full_name"] == "acme/platform"
                && body["issue"]["labels"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|l| l["name"] == LABEL)
                && github::command_of(body["comment"]["body"].as_str().unwrap()) == Some(command)
        };
        let mut fired = 0;
        for (event, (fires, workflows)) in events.iter().zip(sensor_check(&sensor, &events)) {
            let body = &event["body"];
            let what = format!(
                "{sensor}: {} {:?} on {} #{} ({})",
                body["action"],
                body["comment"]["body"],
                body["repository"]["full_name"],
                body["issue"]["number"],
                body["issue"]["state"]
            );
            assert_eq!(fires, wants(body), "{what}");
            if !fires {
                continue;
            }
            fired += 1;
            let number = body["issue"]["number"].as_u64().unwrap();
            let workflow = &workflows[0];
            assert_eq!(
                workflow["metadata"]["generateName"],
                format!("{workflow_name}-pr-{number}-")
            );
            assert_eq!(
                workflow["spec"]["workflowTemplateRef"],
                json!({"name": workflow_name, "clusterScope": true})
            );
            let mut parameters = vec![
                json!({"name": "pr-number", "value": number.to_string()}),
                json!({"name": "repository", "value": "acme/platform"}),
                json!({"name": "comment-id", "value": COMMENT_ID.to_string()}),
            ];
            if command == github::WAKE_COMMAND {
                parameters.push(json!({"name": "repository-name",
                                       "value": body["repository"]["name"]}));
                parameters.push(json!({"name": "requested-at",
                                       "value": body["comment"]["created_at"]}));
            }
            assert_eq!(
                workflow["spec"]["arguments"]["parameters"],
                Value::Array(parameters),
                "{what}"
            );
        }
        // Two or three bodies are the command, on the created examples of the right kind.
        assert!(fired >= 2, "{sensor}: {fired}");
        let pulls = pull_request_events();
        let fired = sensor_check(&sensor, &pulls)
            .iter()
            .filter(|(f, _)| *f)
            .count();
        assert_eq!(fired, 0, "{sensor} fired for a pull_request event");
    }
    for sensor in [
        "create-sandbox-sensor",
        "delete-sandbox-sensor",
        "update-sandbox-sensor",
    ] {
        let fired = sensor_check(sensor, &events)
            .iter()
            .filter(|(f, _)| *f)
            .count();
        assert_eq!(fired, 0, "{sensor} fired for a comment");
    }
}

/// Every Argo Events manifest decodes strictly into Argo Events' own types (its CRDs are
/// schemaless, so the API server accepts any field); a misspelled field is refused.
#[test]
fn the_argo_events_manifests_decode_strictly_and_a_typo_is_refused() {
    let events = workspace_tests::repo_root().join("workflow-templates/events");
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&events)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let decode = |files: &[std::path::PathBuf]| {
        std::process::Command::new(testkit::cluster_tool("sensor-check"))
            .arg("--decode")
            .args(files)
            .output()
            .unwrap()
    };
    let out = decode(&files);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert_eq!(
        text.matches(": ok").count(),
        6,
        "five Sensors and the EventSource: {text}"
    );

    let dir = tempfile::tempdir().unwrap();
    let source = std::fs::read_to_string(events.join("github.yaml")).unwrap();
    let typo = dir.path().join("github.yaml");
    std::fs::write(&typo, source.replace("      webhook:", "      webhok:")).unwrap();
    let out = decode(&[typo]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field \"webhok\""));
}
