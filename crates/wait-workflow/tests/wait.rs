//! wait-workflow against the Kubernetes API double, for what the real API server (tests/real_api.rs)
//! does not do on demand: answer a watch with 410 Gone, end a watch at a moment the test chooses,
//! and refuse watches altogether (a proxy that does not pass them).

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::json;
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
            .env("SBX_OUTPUTS_DIR", self.dir.path().join("out"))
            .env("ARGO_PROGRESS_FILE", self.dir.path().join("progress"))
            .env("SBX_LOG_FORMAT", "json")
            .args(["--name", WF, "--namespace", NS, "--poll-interval", "200ms"])
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
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
            .env("SBX_OUTPUTS_DIR", run.dir.path())
            .args(["--name", WF, "--namespace", NS, flag, value])
            .arg("--kubeconfig")
            .arg(run.kubeconfig())
            .output()
            .unwrap();
        assert_eq!(child.status.code(), Some(2), "{flag} {value}");
    }
    assert!(run.api.requests().is_empty());
}
