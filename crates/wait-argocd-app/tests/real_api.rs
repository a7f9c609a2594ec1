//! wait-argocd-app against the real Kubernetes API server (testkit::KubeApiServer) with Argo CD's
//! Application CRD of the pinned version, under a service account with only the RBAC the
//! template's role grants. No Argo CD controller runs here: the test writes the Application's
//! `status` as Argo CD's application controller does (the CRD has no status subresource).

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::{cluster_cache, KubeApiServer, KubeApiServerOptions};

const APP: &str = "sbx-pr-42";
const HEAD: &str = "3f2a9c41d8e07b6a5c4f3e2d1c0b9a8f7e6d5c4b";
const OLD: &str = "0123456789abcdef0123456789abcdef01234567";

fn shared() -> &'static KubeApiServer {
    static SHARED: OnceLock<KubeApiServer> = OnceLock::new();
    SHARED.get_or_init(|| {
        let server = KubeApiServer::start_with(KubeApiServerOptions {
            controller_manager: false,
            ..Default::default()
        });
        server.install_crds(&[cluster_cache().join("crds/argoproj.io_applications.yaml")]);
        server.stop_at_exit();
        server
    })
}

/// An Argo CD namespace of its own per test, a service account allowed to read Applications there
/// (get, list, watch: what rbac/workflows.yaml grants sandbox-steps), and its kubeconfig.
struct Run {
    ns: String,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Run {
    fn new(ns: &str, granted: bool) -> Run {
        let api = shared();
        // What rbac/argocd-apps.yaml grants.
        let rules = json!([{"apiGroups": ["argoproj.io"], "resources": ["applications"],
                            "verbs": ["get", "list", "watch"]}]);
        let kubeconfig = api.account_kubeconfig(ns, "waiter", granted.then_some(rules));
        Run {
            ns: ns.to_owned(),
            dir: tempfile::tempdir().unwrap(),
            kubeconfig,
        }
    }

    fn path(&self) -> String {
        format!(
            "/apis/argoproj.io/v1alpha1/namespaces/{}/applications/{APP}",
            self.ns
        )
    }

    /// Creates the Application (as create-argocd-app's file, synced by the app-of-apps, would
    /// appear), or sets its status, as Argo CD's controller does.
    fn set_status(&self, status: Value) {
        let api = shared();
        let (code, _) = api.get(&self.path());
        let (code, body) = if code == 404 {
            api.request(
                "POST",
                &format!("/apis/argoproj.io/v1alpha1/namespaces/{}/applications", self.ns),
                Some(json!({
                    "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
                    "metadata": {"name": APP},
                    "spec": {
                        "project": "default",
                        "source": {"repoURL": "https://github.com/acme/infra.git",
                                   "path": "kustomize/environments/sandbox", "targetRevision": "sbx-pr-42"},
                        "destination": {"server": "https://kubernetes.default.svc", "namespace": "apps-sbx-pr-42"}
                    },
                    "status": status,
                })),
                None,
            )
        } else {
            api.request("PATCH", &self.path(), Some(json!({"status": status})), None)
        };
        assert!(code == 200 || code == 201, "{code} {body}");
    }

    fn start(&self, extra: &[&str]) -> Child {
        Command::new(env!("CARGO_BIN_EXE_wait-argocd-app"))
            .env_clear()
            .env("SBX_OUTPUTS_DIR", self.dir.path().join("out"))
            .env("ARGO_PROGRESS_FILE", self.dir.path().join("progress"))
            .args([
                "--name",
                APP,
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
        std::fs::read_to_string(self.dir.path().join("out").join(name)).unwrap_or_default()
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Argo CD's status of an application at `revision`.
fn status(sync: &str, revision: &str, health: &str, resources: Value) -> Value {
    json!({
        "sync": {"status": sync, "revision": revision},
        "health": {"status": health},
        "resources": resources,
    })
}

fn web(health: &str, message: &str) -> Value {
    json!([
        {"group": "apps", "version": "v1", "kind": "Deployment", "namespace": "apps-sbx-pr-42",
         "name": "web", "status": "Synced", "health": {"status": health, "message": message}},
        {"version": "v1", "kind": "Service", "namespace": "apps-sbx-pr-42", "name": "web",
         "status": "Synced", "health": {"status": "Healthy"}}
    ])
}

fn wait_exit(child: Child, within: Duration) -> (Option<i32>, String) {
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(started.elapsed() < within, "took {:?}", started.elapsed());
    (out.status.code(), text(&out))
}

#[test]
fn healthy_at_an_old_revision_keeps_waiting_until_the_new_one() {
    let run = Run::new("argocd-a", true);
    let child = run.start(&["--revision", HEAD, "--timeout", "60s"]);
    std::thread::sleep(Duration::from_millis(800));
    // Not created yet, then created and Healthy at the previous commit: still waiting.
    run.set_status(status("Synced", OLD, "Healthy", web("Healthy", "")));
    std::thread::sleep(Duration::from_millis(800));
    run.set_status(status("OutOfSync", OLD, "Healthy", web("Healthy", "")));
    std::thread::sleep(Duration::from_millis(500));
    run.set_status(status(
        "Synced",
        HEAD,
        "Progressing",
        web("Progressing", "Waiting for rollout"),
    ));
    std::thread::sleep(Duration::from_millis(500));
    let switched = Instant::now();
    run.set_status(status("Synced", HEAD, "Healthy", web("Healthy", "")));
    let (code, text) = wait_exit(child, Duration::from_secs(30));
    assert_eq!(code, Some(0), "{text}");
    println!("Healthy to exit: {:?}", switched.elapsed());
    assert!(text.contains("does not exist yet"), "{text}");
    assert!(text.contains("(waiting for 3f2a9c41d8e0)"), "{text}");
    assert!(text.contains("1/2 resources healthy"), "{text}");
    assert_eq!(run.output("health"), "Healthy");
    assert_eq!(run.output("revision"), HEAD);
    assert_eq!(
        std::fs::read_to_string(run.dir.path().join("progress")).unwrap(),
        "2/2"
    );
}

#[test]
fn degraded_is_exit_3_with_the_resources_messages() {
    let run = Run::new("argocd-b", true);
    run.set_status(status(
        "Synced",
        HEAD,
        "Progressing",
        web("Progressing", ""),
    ));
    let child = run.start(&["--revision", HEAD, "--timeout", "60s"]);
    std::thread::sleep(Duration::from_millis(500));
    run.set_status(status(
        "Synced",
        HEAD,
        "Degraded",
        web(
            "Degraded",
            "Deployment \"web\" exceeded its progress deadline",
        ),
    ));
    let (code, text) = wait_exit(child, Duration::from_secs(30));
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("Degraded at 3f2a9c41d8e0"), "{text}");
    assert!(text.contains("exceeded its progress deadline"), "{text}");
    assert_eq!(run.output("health"), "Degraded");
}

#[test]
fn a_failed_sync_of_the_revision_is_exit_3() {
    let run = Run::new("argocd-c", true);
    let mut failed = status("OutOfSync", OLD, "Healthy", web("Healthy", ""));
    failed["operationState"] = json!({
        "phase": "Failed",
        "startedAt": "2026-12-01T10:00:00Z",
        "finishedAt": "2026-12-01T10:00:04Z",
        "message": "one or more objects failed to apply",
        "operation": {"sync": {"revision": HEAD}},
        "syncResult": {"revision": HEAD, "resources": [
            {"group": "apps", "version": "v1", "kind": "Deployment", "namespace": "apps-sbx-pr-42",
             "name": "web", "status": "SyncFailed", "message": "admission webhook denied the request"}]}
    });
    run.set_status(failed);
    let (code, text) = wait_exit(
        run.start(&["--revision", HEAD, "--timeout", "60s"]),
        Duration::from_secs(30),
    );
    assert_eq!(code, Some(3), "{text}");
    assert!(
        text.contains("admission webhook denied the request"),
        "{text}"
    );
}

#[test]
fn missing_after_the_sync_is_exit_3_after_the_grace() {
    let run = Run::new("argocd-d", true);
    run.set_status(status("Synced", HEAD, "Missing", web("Missing", "")));
    let (code, text) = wait_exit(
        run.start(&[
            "--revision",
            HEAD,
            "--missing-grace",
            "1s",
            "--timeout",
            "60s",
        ]),
        Duration::from_secs(30),
    );
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("still Missing"), "{text}");
}

#[test]
fn the_deadline_is_exit_4_and_deletion_exit_3() {
    let run = Run::new("argocd-e", true);
    run.set_status(status("OutOfSync", OLD, "Healthy", web("Healthy", "")));
    let (code, text) = wait_exit(
        run.start(&["--revision", HEAD, "--timeout", "2s"]),
        Duration::from_secs(30),
    );
    assert_eq!(code, Some(4), "{text}");

    let child = run.start(&["--revision", HEAD, "--timeout", "60s"]);
    std::thread::sleep(Duration::from_millis(800));
    let (status, body) = shared().request("DELETE", &run.path(), None, None);
    assert_eq!(status, 200, "{body}");
    let (code, text) = wait_exit(child, Duration::from_secs(30));
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("was deleted while waiting"), "{text}");
}

#[test]
fn without_rbac_it_is_exit_3_with_the_grant_needed() {
    let run = Run::new("argocd-f", false);
    let (code, text) = wait_exit(run.start(&["--timeout", "30s"]), Duration::from_secs(20));
    assert_eq!(code, Some(3), "{text}");
    assert!(
        text.contains("grant get, list and watch on applications.argoproj.io"),
        "{text}"
    );
}

#[test]
fn bad_flags_are_exit_2() {
    let run = Run::new("argocd-g", true);
    for bad in [
        &["--name", APP, "--revision", "main"][..],
        &["--name", APP, "--revision", ";rm -rf /"],
        &["--name", "../x"],
        &["--name", &"a".repeat(300)],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_wait-argocd-app"))
            .env_clear()
            .args(["--namespace", &run.ns])
            .args(bad)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", text(&out));
    }
}
