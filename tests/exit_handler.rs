//! The lifecycle workflows' exit handler: the failure report it POSTs is JSON and carries the failed
//! nodes. Argo sets `{{workflow.failures}}` in exit handlers to the JSON list of the failed nodes
//! (`{displayName, message, templateName, phase, podName, finishedAt}`) already quoted as a string
//! literal (`strconv.Quote`, argo-workflows v4 workflow/controller/operator.go), and splices it into
//! the body as text: placed as a JSON value, it is a string holding that list. The card's report
//! (report-status `--failures`) gets the same quoted text and reads the list out of it.

use serde_json::{json, Value};
use workspace_tests::manifests;

#[test]
fn the_failure_report_is_json_with_the_failed_nodes() {
    let failures = json!([{
        "displayName": "kustomize", "message": "Error (exit code 3): \"main\" is protected",
        "templateName": "patch-kustomize", "phase": "Failed",
        "podName": "create-sandbox-pr-42-abcde-patch-kustomize-1", "finishedAt": "2026-11-30T19:00:00Z",
    }]);
    let mut checked = 0;
    let mut reported = 0;
    for (file, doc) in manifests() {
        if doc["kind"] != "ClusterWorkflowTemplate" || doc["spec"]["onExit"].is_null() {
            continue;
        }
        let on_exit = doc["spec"]["onExit"].as_str().unwrap();
        let templates = doc["spec"]["templates"].as_array().unwrap();
        let handler = templates.iter().find(|t| t["name"] == on_exit).unwrap();
        let groups = handler["steps"].as_array().unwrap();
        for step in groups.iter().flat_map(|group| group.as_array().unwrap()) {
            // The card (report-status): Argo's quoted list reaches --failures, which reads it.
            let is_report = step["template"] == "report-to-pr"
                || step["templateRef"]["template"] == "report-to-pr";
            if is_report {
                let arguments = step["arguments"]["parameters"].as_array().unwrap();
                let failures_argument = arguments.iter().find(|p| p["name"] == "failures").unwrap();
                assert_eq!(failures_argument["value"], "{{workflow.failures}}");
                let as_argo_passes_it = serde_json::to_string(&failures.to_string()).unwrap();
                let read = report_status::parse_failures(&as_argo_passes_it);
                assert_eq!(read.len(), 1);
                assert_eq!(read[0].step, "kustomize");
                assert_eq!(read[0].message, failures[0]["message"]);
                reported += 1;
                continue;
            }
            let called = templates
                .iter()
                .find(|t| t["name"] == step["template"])
                .unwrap();
            let body = called["http"]["body"].as_str().unwrap();
            assert!(
                body.contains("{{workflow.failures}}"),
                "{}: {body}",
                file.display()
            );
            let rendered = body
                .replace(
                    "{{workflow.failures}}",
                    &serde_json::to_string(&failures.to_string()).unwrap(),
                )
                .replace("{{workflow.name}}", "create-sandbox-pr-42-abcde")
                .replace("{{workflow.namespace}}", "argo")
                .replace("{{workflow.parameters.repository}}", "acme/platform")
                .replace("{{workflow.parameters.pr-number}}", "42")
                .replace("{{workflow.status}}", "Failed");
            assert!(!rendered.contains("{{"), "{rendered}");
            let report: Value = serde_json::from_str(&rendered)
                .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {rendered}", file.display()));
            let listed: Value = serde_json::from_str(report["failures"].as_str().unwrap()).unwrap();
            assert_eq!(listed, failures);
            assert!(report["text"]
                .as_str()
                .unwrap()
                .contains("acme/platform#42: Failed"));
            checked += 1;
        }
    }
    assert_eq!(
        checked, 3,
        "create-sandbox, update-sandbox and delete-sandbox"
    );
    assert_eq!(
        reported, 3,
        "create-sandbox, update-sandbox and delete-sandbox tell the pull request"
    );
}
