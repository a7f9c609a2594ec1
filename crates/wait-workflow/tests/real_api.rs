//! wait-workflow against the real Kubernetes API server (testkit::KubeApiServer, with Argo's
//! Workflow CRD of the pinned version), authenticated with real service-account tokens under RBAC.
//! No workflow controller runs here: the test moves the Workflow through its phases itself, as the
//! controller does (it writes `status` on the object: the CRD has no status subresource). API
//! requests are counted from the server's audit log.
//!
//! The API double (tests/wait.rs) keeps only what a real server will not do on demand: answer a
//! watch with 410 Gone, and refuse watches altogether.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::{cluster_cache, KubeApiServer, KubeApiServerOptions};

const WF: &str = "provision-sbx-pr-42-x7k2p";

/// A server with the Workflow CRD installed.
fn start_server() -> KubeApiServer {
    let server = KubeApiServer::start_with(KubeApiServerOptions {
        controller_manager: false,
        ..Default::default()
    });
    server.install_crds(&[cluster_cache().join("crds/argoproj.io_workflows.yaml")]);
    server
}

/// The server the tests of this file share (one namespace each).
fn shared() -> &'static KubeApiServer {
    static SHARED: OnceLock<KubeApiServer> = OnceLock::new();
    SHARED.get_or_init(|| {
        let server = start_server();
        server.stop_at_exit();
        server
    })
}

/// A sandbox namespace with a service account that may (or may not) read its Workflows, as
/// rbac/wait-workflow.yaml grants it; and a kubeconfig with that account's real token.
struct Run<'a> {
    api: &'a KubeApiServer,
    ns: String,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl<'a> Run<'a> {
    fn new(ns: &str) -> Run<'static> {
        Run::with(shared(), ns, true)
    }

    fn with(api: &'a KubeApiServer, ns: &str, granted: bool) -> Run<'a> {
        // What rbac/wait-workflow.yaml grants.
        let rules = json!([{"apiGroups": ["argoproj.io"], "resources": ["workflows"],
                            "verbs": ["get", "list", "watch"]}]);
        let kubeconfig = api.account_kubeconfig(ns, "waiter", granted.then_some(rules));
        Run {
            api,
            ns: ns.to_owned(),
            dir: tempfile::tempdir().unwrap(),
            kubeconfig,
        }
    }

    fn path(&self) -> String {
        format!(
            "/apis/argoproj.io/v1alpha1/namespaces/{}/workflows/{WF}",
            self.ns
        )
    }

    /// Creates the Workflow, or sets its status, as the controller would.
    fn set_status(&self, status: Value) {
        let (code, body) = self.api.get(&self.path());
        let (code, body) = if code == 404 {
            self.api.request(
                "POST",
                &format!("/apis/argoproj.io/v1alpha1/namespaces/{}/workflows", self.ns),
                Some(json!({
                    "apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
                    "metadata": {"name": WF},
                    "spec": {"workflowTemplateRef": {"name": "sandbox-infra", "clusterScope": true}},
                    "status": status,
                })),
                None,
            )
        } else {
            assert_eq!(code, 200, "{body}");
            self.api
                .request("PATCH", &self.path(), Some(json!({"status": status})), None)
        };
        assert!(code == 200 || code == 201, "{code} {body}");
    }

    fn delete(&self) {
        let (code, body) = self.api.request("DELETE", &self.path(), None, None);
        assert_eq!(code, 200, "{body}");
    }

    fn start(&self, extra: &[&str]) -> Child {
        Command::new(env!("CARGO_BIN_EXE_wait-workflow"))
            .env_clear()
            .env("SBX_OUTPUTS_DIR", self.dir.path().join("out"))
            .env("ARGO_PROGRESS_FILE", self.dir.path().join("progress"))
            .env("SBX_LOG_FORMAT", "json")
            .args([
                "--name",
                WF,
                "--namespace",
                &self.ns,
                "--poll-interval",
                "200ms",
            ])
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
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

    /// The audit log's requests on this namespace's Workflows by the service account: (verb, uri),
    /// one per request (a watch is logged when its response starts, a read when it completes).
    fn requests(&self) -> Vec<(String, String)> {
        let user = format!("system:serviceaccount:{}:waiter", self.ns);
        let mut seen = std::collections::HashSet::new();
        self.api
            .audit_log()
            .into_iter()
            .filter(|e| e["user"]["username"] == user.as_str())
            .filter(|e| e["objectRef"]["resource"] == "workflows")
            .filter(|e| seen.insert(e["auditID"].as_str().unwrap_or_default().to_owned()))
            .map(|e| {
                (
                    e["verb"].as_str().unwrap_or_default().to_owned(),
                    e["requestURI"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
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
    std::thread::sleep(Duration::from_millis(500));
}

fn pod(name: &str, phase: &str) -> Value {
    json!({ "id": format!("{WF}-{name}"), "name": format!("{WF}.{name}"), "displayName": name,
            "type": "Pod", "phase": phase, "templateName": name })
}

fn nodes(list: &[Value]) -> Value {
    Value::Object(
        list.iter()
            .map(|n| (n["id"].as_str().unwrap().to_owned(), n.clone()))
            .collect(),
    )
}

#[test]
fn pending_running_succeeded_on_one_watch() {
    let run = Run::new("apps-sbx-pr-1");
    run.set_status(json!({ "phase": "Pending" }));
    let child = run.start(&[]);
    pause();
    run.set_status(json!({ "phase": "Running", "progress": "1/3",
        "nodes": nodes(&[pod("terraform", "Succeeded"), pod("copy-bucket", "Running"), pod("restore-db", "Running")]) }));
    pause();
    assert_eq!(
        std::fs::read_to_string(run.dir.path().join("progress")).unwrap(),
        "1/3"
    );
    let switched = Instant::now();
    run.set_status(json!({ "phase": "Succeeded", "progress": "3/3" }));
    let out = finish(child);
    let latency = switched.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(latency < Duration::from_secs(1), "{latency:?}");
    assert_eq!(run.output("phase"), "Succeeded");
    assert_eq!(run.output("progress"), "3/3");
    assert_eq!(run.output("failed-nodes"), "[]");
    assert!(
        text(&out).contains("running: [copy-bucket, restore-db]"),
        "{}",
        text(&out)
    );
    // Watched, not polled: one read and one watch for the whole wait, as the server saw them.
    let requests = run.requests();
    let watches = requests.iter().filter(|(verb, _)| verb == "watch").count();
    assert_eq!(watches, 1, "{requests:?}");
    assert!(requests.len() <= 3, "{requests:?}");
}

#[test]
fn failed_with_the_failed_nodes_and_their_messages() {
    let run = Run::new("apps-sbx-pr-2");
    run.set_status(json!({ "phase": "Running", "progress": "1/3" }));
    let child = run.start(&[]);
    pause();
    let mut failed = pod("restore-db", "Failed");
    failed["message"] = json!("Error (exit code 3)");
    failed["outputs"] = json!({ "exitCode": "3" });
    run.set_status(
        json!({ "phase": "Failed", "progress": "2/3", "message": "child 'restore-db' failed",
        "nodes": nodes(&[pod("copy-bucket", "Succeeded"), failed]) }),
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
}

#[test]
fn error_phase_is_a_failure() {
    let run = Run::new("apps-sbx-pr-3");
    run.set_status(json!({ "phase": "Error", "message": "pod deleted" }));
    let out = finish(run.start(&[]));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(run.output("phase"), "Error");
}

#[test]
fn absent_then_created() {
    let run = Run::new("apps-sbx-pr-4");
    let child = run.start(&[]);
    // Created only once the step has looked for it and found nothing: a list it was answered
    // (200) in the audit log. (A first answer can be a 503 of the just-installed CRD, which the
    // client retries by itself.)
    let user = format!("system:serviceaccount:{}:waiter", run.ns);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !run.api.audit_log().iter().any(|e| {
        e["user"]["username"] == user.as_str()
            && e["verb"] == "list"
            && e["responseStatus"]["code"] == 200
    }) {
        assert!(
            Instant::now() < deadline,
            "the step never read the workflow"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    run.set_status(json!({ "phase": "Running" }));
    pause();
    run.set_status(json!({ "phase": "Succeeded", "progress": "1/1" }));
    let out = finish(child);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("does not exist yet"), "{}", text(&out));
}

#[test]
fn deleted_while_waiting() {
    let run = Run::new("apps-sbx-pr-5");
    run.set_status(json!({ "phase": "Running" }));
    let child = run.start(&[]);
    pause();
    run.delete();
    let out = finish(child);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("deleted while waiting"),
        "{}",
        text(&out)
    );
}

/// The API server crashes and comes back while the step waits (every connection cut, the watch
/// among them): the step reads and watches again from where it was, and misses nothing.
#[test]
fn an_api_server_restart_is_ridden_out() {
    let mut api = start_server();
    let (ns, kubeconfig) = {
        let run = Run::with(&api, "apps-sbx-pr-6", true);
        run.set_status(json!({ "phase": "Running", "progress": "0/2" }));
        (run.ns.clone(), run.kubeconfig.clone())
    };
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_wait-workflow"))
        .env_clear()
        .env("SBX_OUTPUTS_DIR", dir.path().join("out"))
        .env("SBX_LOG_FORMAT", "json")
        .args(["--name", WF, "--namespace", &ns, "--poll-interval", "200ms"])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    pause();
    api.restart_apiserver();
    let run = Run {
        api: &api,
        ns: ns.clone(),
        dir,
        kubeconfig,
    };
    run.set_status(json!({ "phase": "Running", "progress": "1/2" }));
    pause();
    run.set_status(json!({ "phase": "Succeeded", "progress": "2/2" }));
    let out = finish(child);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(run.output("progress"), "2/2");
    // No tight loop while the server was away or just back: the step watches from the list's
    // resource version, not the object's, which the new server's watch cache may not hold (a
    // 410 Gone on every watch until the object changes).
    let requests = run.requests();
    assert!(
        requests.len() <= 20,
        "{} requests: {requests:?}",
        requests.len()
    );
    assert!(!text(&out).contains("410 Gone"), "{}", text(&out));
}

#[test]
fn missing_rbac_and_a_rejected_token_are_preconditions_with_hints() {
    let run = Run::with(shared(), "apps-sbx-pr-7", false);
    run.set_status(json!({ "phase": "Running" }));
    let out = finish(run.start(&[]));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains(
            "grant get, list and watch on workflows.argoproj.io in namespace apps-sbx-pr-7"
        ),
        "{}",
        text(&out)
    );

    let kubeconfig = run.api.kubeconfig("rejected", "not-a-real-token-5");
    let out = Command::new(env!("CARGO_BIN_EXE_wait-workflow"))
        .env_clear()
        .env("SBX_OUTPUTS_DIR", run.dir.path().join("out"))
        .args(["--name", WF, "--namespace", &run.ns, "--kubeconfig"])
        .arg(kubeconfig)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(!text(&out).contains("not-a-real-token-5"));
}

#[test]
fn the_deadline_is_exit_4() {
    let run = Run::new("apps-sbx-pr-8");
    run.set_status(json!({ "phase": "Running" }));
    let started = Instant::now();
    let out = finish(run.start(&["--timeout", "1s"]));
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(started.elapsed() < Duration::from_secs(4));
}
