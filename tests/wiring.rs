//! The workflows are wired right: every template they call exists and gets the inputs it needs,
//! every `{{...}}` they use names a parameter or a task output that exists, and the Workflows they
//! create (resource templates, Sensor triggers) are valid Workflows calling existing templates.
//! Renaming a step's input or output, or a workflow parameter, breaks this test.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use workspace_tests::manifests;

use serde_json::Value;

/// A template's interface: its inputs (name → has a default) and its output parameters.
#[derive(Default, Clone)]
struct Interface {
    inputs: BTreeMap<String, bool>,
    outputs: BTreeSet<String>,
}

fn interface(template: &Value) -> Interface {
    let names = |list: &Value| -> Vec<(String, bool)> {
        list.as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let has_default = !p["value"].is_null() || !p["default"].is_null();
                (p["name"].as_str().unwrap().to_owned(), has_default)
            })
            .collect()
    };
    Interface {
        inputs: names(&template["inputs"]["parameters"])
            .into_iter()
            .collect(),
        outputs: names(&template["outputs"]["parameters"])
            .into_iter()
            .map(|(n, _)| n)
            .collect(),
    }
}

/// ClusterWorkflowTemplate name → template name → interface; and its workflow parameters.
struct Library {
    templates: BTreeMap<String, BTreeMap<String, Interface>>,
    arguments: BTreeMap<String, BTreeMap<String, bool>>,
}

fn library(docs: &[(PathBuf, Value)]) -> Library {
    let mut templates = BTreeMap::new();
    let mut arguments = BTreeMap::new();
    for (_, doc) in docs {
        if doc["kind"] != "ClusterWorkflowTemplate" {
            continue;
        }
        let name = doc["metadata"]["name"].as_str().unwrap().to_owned();
        let by_name = doc["spec"]["templates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["name"].as_str().unwrap().to_owned(), interface(t)))
            .collect();
        templates.insert(name.clone(), by_name);
        arguments.insert(
            name,
            interface(&serde_json::json!({"inputs": doc["spec"]["arguments"]})).inputs,
        );
    }
    Library {
        templates,
        arguments,
    }
}

/// Every `{{...}}` expression in `text`.
fn placeholders(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start..].find("}}") else {
            break;
        };
        found.push(rest[start + 2..start + len].trim().to_owned());
        rest = &rest[start + len + 2..];
    }
    found
}

/// A task or step calling a template: (its name, the template it calls as (cwt, template), its
/// argument names, the text of its arguments and `when`).
struct Call {
    name: String,
    target: (String, String),
    arguments: Vec<String>,
    text: String,
    /// The `withParam` the call loops over (`{{item.X}}` comes from it).
    with_param: Option<String>,
}

/// The keys of the items in JSON-list outputs that workflows loop over with `withParam`, by
/// (step template, output); `crates/sweep-sandboxes/tests/` checks the step writes them.
const ITEM_KEYS: &[(&str, &str, &[&str])] = &[
    (
        "sweep-sandboxes",
        "deletes",
        &["pr-number", "environment", "action", "reason"],
    ),
    (
        "sweep-sandboxes",
        "warnings",
        &["pr-number", "environment", "expires-at", "reason"],
    ),
    (
        "sweep-sandboxes",
        "sleeps",
        &["pr-number", "environment", "reason"],
    ),
];

fn calls(cwt: &str, template: &Value) -> Vec<Call> {
    let mut items: Vec<&Value> = template["dag"]["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    for group in template["steps"].as_array().into_iter().flatten() {
        items.extend(group.as_array().into_iter().flatten());
    }
    items
        .into_iter()
        .map(|item| {
            let target = if item["templateRef"].is_object() {
                (
                    item["templateRef"]["name"].as_str().unwrap().to_owned(),
                    item["templateRef"]["template"].as_str().unwrap().to_owned(),
                )
            } else {
                (
                    cwt.to_owned(),
                    item["template"].as_str().unwrap().to_owned(),
                )
            };
            Call {
                name: item["name"].as_str().unwrap().to_owned(),
                target,
                arguments: item["arguments"]["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| p["name"].as_str().unwrap().to_owned())
                    .collect(),
                text: format!("{} {}", item["arguments"], item["when"]),
                with_param: item["withParam"].as_str().map(str::to_owned),
            }
        })
        .collect()
}

/// Checks one placeholder used in template `template` of `cwt`, where `tasks` are the calls of
/// the same DAG or steps (name → the template they call).
fn check_placeholder(
    lib: &Library,
    cwt: &str,
    template: &Value,
    tasks: &BTreeMap<String, (String, String)>,
    expr: &str,
    problems: &mut Vec<String>,
) {
    let at = format!(
        "{cwt}/{}: {{{{{expr}}}}}",
        template["name"].as_str().unwrap_or("spec")
    );
    // An expression (`{{=...}}`, expr-lang): each reference in it is checked as a placeholder.
    if let Some(expression) = expr.strip_prefix('=') {
        let references = expression_references(expression);
        if references.is_empty() {
            problems.push(format!("{at}: an expression without references"));
        }
        for reference in references {
            check_placeholder(lib, cwt, template, tasks, &reference, problems);
        }
        return;
    }
    let parts: Vec<&str> = expr.split('.').collect();
    match parts.as_slice() {
        ["workflow", "parameters", name] => {
            if !lib.arguments[cwt].contains_key(*name) {
                problems.push(format!("{at}: no workflow parameter {name}"));
            }
        }
        ["inputs", "parameters", name] => {
            if !interface(template).inputs.contains_key(*name) {
                problems.push(format!("{at}: no input {name}"));
            }
        }
        ["tasks" | "steps", task, "outputs", "parameters", output] => match tasks.get(*task) {
            None => problems.push(format!("{at}: no task {task}")),
            Some((target_cwt, target)) => {
                let outputs = &lib.templates[target_cwt][target].outputs;
                if !outputs.contains(*output) {
                    problems.push(format!(
                        "{at}: {target_cwt}/{target} has no output {output}"
                    ));
                }
            }
        },
        ["workflow", "name" | "namespace" | "status" | "failures"] => {}
        _ => problems.push(format!("{at}: an expression this test does not know")),
    }
}

/// `{{item.KEY}}` in a call: the call loops (`withParam`) over a list output whose items have KEY.
fn check_item(
    call: &Call,
    tasks: &BTreeMap<String, (String, String)>,
    key: &str,
    at: &str,
    problems: &mut Vec<String>,
) {
    let Some(with_param) = &call.with_param else {
        problems.push(format!("{at}: {{{{item.{key}}}}} without withParam"));
        return;
    };
    let source = placeholders(with_param);
    let parts: Vec<&str> = source
        .first()
        .map(|s| s.split('.').collect())
        .unwrap_or_default();
    let ["tasks" | "steps", task, "outputs", "parameters", output] = parts.as_slice() else {
        problems.push(format!(
            "{at}: withParam {with_param} is not a step's output"
        ));
        return;
    };
    let Some((_, template)) = tasks.get(*task) else {
        problems.push(format!("{at}: withParam names no step {task}"));
        return;
    };
    match ITEM_KEYS
        .iter()
        .find(|(t, o, _)| t == template && o == output)
    {
        None => problems.push(format!(
            "{at}: the items of {template}'s {output} are not described in ITEM_KEYS"
        )),
        Some((_, _, keys)) if !keys.contains(&key) => problems.push(format!(
            "{at}: the items of {template}'s {output} have no key {key} ({keys:?})"
        )),
        Some(_) => {}
    }
}

/// The references of an expr-lang expression (`tasks['a-b'].outputs.parameters.x`,
/// `workflow.parameters['y']`), in dotted form (`tasks.a-b.outputs.parameters.x`).
fn expression_references(expression: &str) -> Vec<String> {
    let dotted = expression.replace("['", ".").replace("']", "");
    let mut references = Vec::new();
    let mut rest = dotted.as_str();
    while let Some(start) = ["tasks.", "steps.", "workflow.", "inputs."]
        .iter()
        .filter_map(|root| rest.find(root))
        .min()
    {
        let preceded_by_name = rest[..start]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
            .unwrap_or(tail.len());
        if !preceded_by_name {
            references.push(tail[..end].to_owned());
        }
        rest = &tail[end.max(1)..];
    }
    references
}

#[test]
fn references_are_found_in_expressions() {
    assert_eq!(
        expression_references(
            "tasks['module-branch'].outputs.parameters.existed == 'true' ? \
             tasks.validate.outputs.parameters.branch : workflow.parameters['base-branch']"
        ),
        [
            "tasks.module-branch.outputs.parameters.existed",
            "tasks.validate.outputs.parameters.branch",
            "workflow.parameters.base-branch"
        ]
    );
}

/// A Workflow manifest the library creates (child workflow, Sensor trigger) calls an existing
/// ClusterWorkflowTemplate with its required parameters. (Its fields are checked by upstream:
/// `argo lint` for the Sensors' Workflows, the API server's strict validation for the child.)
fn check_created_workflow(lib: &Library, at: &str, workflow: &Value, problems: &mut Vec<String>) {
    let reference = &workflow["spec"]["workflowTemplateRef"];
    let Some(name) = reference["name"].as_str() else {
        problems.push(format!("{at}: no workflowTemplateRef"));
        return;
    };
    if reference["clusterScope"] != true {
        problems.push(format!(
            "{at}: workflowTemplateRef without clusterScope: true"
        ));
    }
    let Some(expected) = lib.arguments.get(name) else {
        problems.push(format!("{at}: no ClusterWorkflowTemplate {name}"));
        return;
    };
    let given: BTreeSet<&str> = workflow["spec"]["arguments"]["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for arg in &given {
        if !expected.contains_key(*arg) {
            problems.push(format!("{at}: {name} has no parameter {arg}"));
        }
    }
    for (param, has_default) in expected {
        if !has_default && !given.contains(param.as_str()) {
            problems.push(format!("{at}: {name}'s parameter {param} not given"));
        }
    }
}

#[test]
fn every_call_reaches_a_template_with_the_inputs_it_needs() {
    let docs = manifests();
    let lib = library(&docs);
    let mut problems = Vec::new();
    let mut checked_calls = 0;
    let mut checked_workflows = 0;
    for (file, doc) in &docs {
        if doc["kind"] != "ClusterWorkflowTemplate" {
            continue;
        }
        let cwt = doc["metadata"]["name"].as_str().unwrap();
        for template in doc["spec"]["templates"].as_array().unwrap() {
            let calls = calls(cwt, template);
            let tasks: BTreeMap<String, (String, String)> = calls
                .iter()
                .map(|c| (c.name.clone(), c.target.clone()))
                .collect();
            for call in &calls {
                let at = format!("{} {cwt}/{} → {}", file.display(), call.name, call.target.1);
                let Some(target) = lib
                    .templates
                    .get(&call.target.0)
                    .and_then(|t| t.get(&call.target.1))
                else {
                    problems.push(format!("{at}: no such template {:?}", call.target));
                    continue;
                };
                checked_calls += 1;
                for arg in &call.arguments {
                    if !target.inputs.contains_key(arg) {
                        problems.push(format!("{at}: passes {arg}, not an input"));
                    }
                }
                for (input, has_default) in &target.inputs {
                    if !has_default && !call.arguments.contains(input) {
                        problems.push(format!("{at}: required input {input} not passed"));
                    }
                }
                for expr in placeholders(&call.text) {
                    if let Some(key) = expr.strip_prefix("item.") {
                        check_item(call, &tasks, key, &at, &mut problems);
                        continue;
                    }
                    check_placeholder(&lib, cwt, template, &tasks, &expr, &mut problems);
                }
                for expr in call.with_param.iter().flat_map(|p| placeholders(p)) {
                    check_placeholder(&lib, cwt, template, &tasks, &expr, &mut problems);
                }
            }
            // Workflows created by resource templates.
            if let Some(manifest) = template["resource"]["manifest"].as_str() {
                for expr in placeholders(manifest) {
                    check_placeholder(&lib, cwt, template, &tasks, &expr, &mut problems);
                }
                let created: Value = serde_yaml::from_str(manifest).unwrap();
                if created["kind"] == "Workflow" {
                    let at = format!("{} {cwt}/{}", file.display(), template["name"]);
                    check_created_workflow(&lib, &at, &created, &mut problems);
                    checked_workflows += 1;
                }
            }
        }
        // The workflow-level settings use only the workflow's own parameters.
        let spec_text = format!(
            "{} {}",
            doc["spec"]["synchronization"], doc["spec"]["onExit"]
        );
        for expr in placeholders(&spec_text) {
            check_placeholder(
                &lib,
                cwt,
                &Value::Null,
                &BTreeMap::new(),
                &expr,
                &mut problems,
            );
        }
    }
    for (file, doc) in &docs {
        if doc["kind"] != "Sensor" {
            continue;
        }
        for trigger in doc["spec"]["triggers"].as_array().unwrap() {
            let workflow = &trigger["template"]["argoWorkflow"]["source"]["resource"];
            let at = format!("{} trigger {}", file.display(), trigger["template"]["name"]);
            check_created_workflow(&lib, &at, workflow, &mut problems);
            checked_workflows += 1;
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(checked_calls >= 15, "only {checked_calls} calls checked");
    assert!(
        checked_workflows >= 2,
        "only {checked_workflows} created workflows checked"
    );
}
