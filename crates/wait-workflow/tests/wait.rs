//! wait-workflow run for real, with a kubeconfig pointing at the Kubernetes API double, while the
//! test moves the Workflow through its phases.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::KubeApiDouble;

const NS: &str = "apps-sbx-pr-42";
const WF: &str = "sbx-pr-42-data";

struct Run {
    api: KubeApiDouble,
    dir: tempfile::TempDir,
}

impl Run {
    fn new() -> Run {
        let api = KubeApiDouble::start("sa-token-1");
        let dir = tempfile::tempdir().unwrap();
        api.write_kubeconfig(&dir.path().join("kubeconfig"), "sa-token-1");
        Run { api, dir }
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    fn start(&self, extra: &[&str]) -> Child {
        Command::new(env!("CARGO_BIN_EXE_wait-workflow"))
            .env_clear()
            .env("OUTPUTS_DIR", self.dir.path().join("out"))
            .env("ARGO_PROGRESS_FILE", self.dir.path().join("progress"))
            .env("LOG_FORMAT", "json")
            .args(["--name", WF, "--namespace", NS, "--poll-interval", "200ms"])
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn output(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join("out").join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    }
}

fn finish(child: Child) -> Output {
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn pause() {
    std::thread::sleep(Duration::from_millis(400));
}

fn pod(name: &str, phase: &str) -> Value {
    json!({ "id": name, "name": format!("{WF}.{name}"), "displayName": name, "type": "Pod", "phase": phase })
}

fn nodes(list: &[Value]) -> Value {
    Value::Object(
        list.iter()
            .map(|n| (n["id"].as_str().unwrap().to_owned(), n.clone()))
            .collect(),
    )
}

#[test]
fn pending_running_succeeded() {
    let run = Run::new();
    run.api.set_workflow(NS, WF, json!({ "phase": "Pending" }));
    let child = run.start(&[]);
    pause();
    run.api.set_workflow(
        NS,
        WF,
        json!({ "phase": "Running", "progress": "1/3", "nodes": nodes(&[pod("terraform", "Succeeded"), pod("copy-bucket", "Running"), pod("restore-db", "Running")]) }),
    );
    pause();
    assert_eq!(
        std::fs::read_to_string(run.dir.path().join("progress")).unwrap(),
        "1/3"
    );
    let switched = Instant::now();
    run.api
        .set_workflow(NS, WF, json!({ "phase": "Succeeded", "progress": "3/3" }));
    let out = finish(child);
    let latency = switched.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(latency < Duration::from_secs(1), "{latency:?}");
    assert_eq!(run.output("phase"), "Succeeded");
    assert_eq!(run.output("progress"), "3/3");
    assert_eq!(run.output("failed-nodes"), "[]");
    assert_eq!(
        std::fs::read_to_string(run.dir.path().join("progress")).unwrap(),
        "3/3"
    );
    let log = text(&out);
    assert!(log.contains("running: [copy-bucket, restore-db]"), "{log}");
    // Watched, not polled: a handful of requests for the whole wait.
    let requests = run.api.requests().len();
    assert!(requests <= 3, "{requests} requests");
    assert!(run
        .api
        .requests()
        .iter()
        .any(|r| r.query_param("watch").is_some()));
}

#[test]
fn failed_with_the_failed_nodes_and_their_messages() {
    let run = Run::new();
    run.api
        .set_workflow(NS, WF, json!({ "phase": "Running", "progress": "1/3" }));
    let child = run.start(&[]);
    pause();
    let mut failed = pod("restore-db", "Failed");
    failed["message"] = json!("Error (exit code 3)");
    failed["outputs"] = json!({ "exitCode": "3" });
    run.api.set_workflow(
        NS,
        WF,
        json!({ "phase": "Failed", "progress": "2/3", "message": "child 'restore-db' failed", "nodes": nodes(&[pod("copy-bucket", "Succeeded"), failed]) }),
    );
    let out = finish(child);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(run.output("phase"), "Failed");
    assert_eq!(run.output("message"), "child 'restore-db' failed");
    let nodes: Value = serde_json::from_str(&run.output("failed-nodes")).unwrap();
    assert_eq!(
        nodes,
        json!([{ "name": "restore-db", "message": "Error (exit code 3)", "exitCode": "3" }])
    );
    let log = text(&out);
    assert!(
        log.contains("node \\\"restore-db\\\" failed: \\\"Error (exit code 3)\\\" (exit code 3)"),
        "{log}"
    );
}

#[test]
fn error_phase_is_a_failure() {
    let run = Run::new();
    run.api.set_workflow(
        NS,
        WF,
        json!({ "phase": "Error", "message": "pod deleted" }),
    );
    let out = finish(run.start(&[]));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(run.output("phase"), "Error");
}

#[test]
fn absent_then_created() {
    let run = Run::new();
    let child = run.start(&[]);
    std::thread::sleep(Duration::from_millis(700));
    run.api.set_workflow(NS, WF, json!({ "phase": "Running" }));
    pause();
    run.api
        .set_workflow(NS, WF, json!({ "phase": "Succeeded", "progress": "1/1" }));
    let out = finish(child);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("does not exist yet"));
}

#[test]
fn deleted_while_waiting() {
    let run = Run::new();
    run.api.set_workflow(NS, WF, json!({ "phase": "Running" }));
    let child = run.start(&[]);
    pause();
    run.api.delete_workflow(NS, WF);
    let out = finish(child);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("deleted while waiting"));
}

#[test]
fn a_watch_closed_by_the_server_and_a_410_are_survived() {
    let run = Run::new();
    run.api
        .set_workflow(NS, WF, json!({ "phase": "Running", "progress": "0/2" }));
    let child = run.start(&[]);
    pause();
    run.api.expire_next_watch();
    run.api.close_watches();
    pause();
    run.api
        .set_workflow(NS, WF, json!({ "phase": "Running", "progress": "1/2" }));
    pause();
    run.api.close_watches();
    pause();
    run.api
        .set_workflow(NS, WF, json!({ "phase": "Succeeded", "progress": "2/2" }));
    let out = finish(child);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("410 Gone"), "{}", text(&out));
    let watches = run
        .api
        .requests()
        .iter()
        .filter(|r| r.query_param("watch").is_some())
        .count();
    assert!(watches >= 3, "re-watched after each end: {watches}");
}

#[test]
fn without_watches_it_polls_once_per_interval() {
    let run = Run::new();
    run.api.break_watches();
    run.api.set_workflow(NS, WF, json!({ "phase": "Running" }));
    let child = run.start(&[]);
    std::thread::sleep(Duration::from_millis(2000));
    run.api
        .set_workflow(NS, WF, json!({ "phase": "Succeeded" }));
    let out = finish(child);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let gets = run
        .api
        .requests()
        .iter()
        .filter(|r| r.query_param("watch").is_none())
        .count();
    // ~2.2 s at one read per 200 ms: about 11, never a busy loop.
    assert!((4..=14).contains(&gets), "{gets} reads");
}

#[test]
fn a_rejected_token_and_missing_rbac_are_preconditions_with_hints() {
    let run = Run::new();
    run.api.set_workflow(NS, WF, json!({ "phase": "Running" }));
    run.api.write_kubeconfig(&run.kubeconfig(), "wrong-token-5");
    let out = finish(run.start(&[]));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(!text(&out).contains("wrong-token-5"));

    run.api.write_kubeconfig(&run.kubeconfig(), "sa-token-1");
    run.api.set_forbidden(true);
    let out = finish(run.start(&[]));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains(
            "grant get, list and watch on workflows.argoproj.io in namespace apps-sbx-pr-42"
        ),
        "{}",
        text(&out)
    );
}

#[test]
fn the_deadline_is_exit_4() {
    let run = Run::new();
    run.api.set_workflow(NS, WF, json!({ "phase": "Running" }));
    let started = Instant::now();
    let out = finish(run.start(&["--timeout", "1s"]));
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[test]
fn bad_names_are_refused() {
    let run = Run::new();
    for (flag, value) in [
        ("--name", "../x"),
        ("--name", "A"),
        ("--namespace", "a.b"),
        ("--name", ""),
    ] {
        let child = Command::new(env!("CARGO_BIN_EXE_wait-workflow"))
            .env_clear()
            .env("OUTPUTS_DIR", run.dir.path())
            .args(["--name", WF, "--namespace", NS, flag, value])
            .arg("--kubeconfig")
            .arg(run.kubeconfig())
            .output()
            .unwrap();
        assert_eq!(child.status.code(), Some(2), "{flag} {value}");
    }
    assert!(run.api.requests().is_empty());
}
