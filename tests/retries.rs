//! Argo's retry and deadline semantics the templates rely on, checked where no controller runs.
//!
//! `retryStrategy.backoff.maxDuration` counts from the first attempt: once it has passed, Argo
//! retries nothing, and it also sets every retry pod's activeDeadlineSeconds to what is left of it
//! (argo-workflows v4 workflow/controller/operator.go, `processNodeRetries`; workflowpod.go). A
//! maxDuration shorter than the step's own timeout therefore turns off the very retry the
//! template asks for on exit 4 (a timeout). The library sets none; the workflow's deadline bounds
//! the whole.

use serde_json::Value;
use workspace_tests::manifests;

/// Every template with a retryStrategy, as (file: template, retryStrategy).
fn retry_strategies() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (file, doc) in manifests() {
        for template in doc["spec"]["templates"].as_array().into_iter().flatten() {
            if template["retryStrategy"].is_object() {
                out.push((
                    format!("{}: {}", file.display(), template["name"]),
                    template["retryStrategy"].clone(),
                ));
            }
        }
    }
    out
}

#[test]
fn no_retry_is_cut_short_by_a_backoff_max_duration() {
    let strategies = retry_strategies();
    assert!(strategies.len() >= 11, "{}", strategies.len());
    let cut: Vec<&String> = strategies
        .iter()
        .filter(|(_, retry)| !retry["backoff"]["maxDuration"].is_null())
        .map(|(at, _)| at)
        .collect();
    assert!(cut.is_empty(), "backoff.maxDuration set in {cut:?}");
}

fn duration_secs(text: &str) -> u64 {
    humantime::parse_duration(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .as_secs()
}

fn template<'a>(docs: &'a [(std::path::PathBuf, Value)], name: &str) -> &'a Value {
    &docs
        .iter()
        .find(|(_, d)| d["kind"] == "ClusterWorkflowTemplate" && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no ClusterWorkflowTemplate {name}"))
        .1
}

/// wait-workflow must outlast the child it waits for, or a slow but healthy provision fails
/// create-sandbox while the child goes on; and both must fit in the parent's deadline.
#[test]
fn wait_workflow_outlasts_the_child_and_fits_in_the_parent() {
    let docs = manifests();
    let wait = &template(&docs, "wait-workflow")["spec"]["templates"][0];
    let timeout = wait["inputs"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "timeout")
        .unwrap()["value"]
        .as_str()
        .unwrap();
    let child_deadline = template(&docs, "sandbox-infra")["spec"]["activeDeadlineSeconds"]
        .as_u64()
        .unwrap();
    assert!(
        duration_secs(timeout) > child_deadline,
        "wait-workflow's timeout {timeout} ends before sandbox-infra's deadline {child_deadline} s"
    );
    for parent in ["create-sandbox", "delete-sandbox"] {
        let deadline = template(&docs, parent)["spec"]["activeDeadlineSeconds"]
            .as_u64()
            .unwrap();
        assert!(
            deadline > duration_secs(timeout) + 10 * 60,
            "{parent}'s deadline {deadline} s leaves no room around wait-workflow's {timeout}"
        );
    }
}

/// Argo waits out a retry's backoff before it evaluates `retryStrategy.expression` (the same
/// function: the backoff check returns before the expression is read), so the first pause delays
/// every failure that is not retried, at each level of nesting. A step's exit 2 or 3 must fail its
/// workflow at once: the first pause of every template retried only on exit 4 is at most 2 s
/// (`make e2e` measures the whole: a failed restore-db to its parent workflow's end).
#[test]
fn a_failure_that_is_not_retried_is_not_held_back_by_a_backoff() {
    let on_exit_4: Vec<(String, Value)> = retry_strategies()
        .into_iter()
        .filter(|(_, retry)| retry["expression"] == "asInt(lastRetry.exitCode) == 4")
        .collect();
    assert!(on_exit_4.len() >= 10, "{}", on_exit_4.len());
    let slow: Vec<String> = on_exit_4
        .into_iter()
        .filter_map(|(at, retry)| {
            let duration = retry["backoff"]["duration"].as_str().unwrap_or("0s");
            let seconds: f64 = humantime::parse_duration(duration)
                .unwrap_or_else(|e| panic!("{at}: backoff.duration {duration}: {e}"))
                .as_secs_f64();
            (seconds > 2.0).then(|| format!("{at}: {duration}"))
        })
        .collect();
    assert!(slow.is_empty(), "a long first backoff: {slow:?}");
}
