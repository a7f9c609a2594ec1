//! `make bench` for wait-workflow (ignored in `make test`): the latency from the API double
//! switching the phase to the process exiting, and the API requests per minute while waiting,
//! watching and polling.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use testkit::KubeApiDouble;

fn start(api: &KubeApiDouble, dir: &std::path::Path, poll: &str) -> std::process::Child {
    api.write_kubeconfig(&dir.join("kubeconfig"), api.token());
    Command::new(env!("CARGO_BIN_EXE_wait-workflow"))
        .env_clear()
        .env("SBX_OUTPUTS_DIR", dir.join("out"))
        .args(["--name", "wf", "--namespace", "ns", "--poll-interval", poll])
        .arg("--kubeconfig")
        .arg(dir.join("kubeconfig"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
#[ignore = "a benchmark: make bench"]
fn latency_and_request_rate() {
    let dir = tempfile::tempdir().unwrap();
    let mut latencies = Vec::new();
    for _ in 0..20 {
        let api = KubeApiDouble::start("t");
        api.set_workflow("ns", "wf", json!({ "phase": "Running" }));
        let mut child = start(&api, dir.path(), "5s");
        std::thread::sleep(Duration::from_millis(300));
        let switched = Instant::now();
        api.set_workflow("ns", "wf", json!({ "phase": "Succeeded" }));
        child.wait().unwrap();
        latencies.push(switched.elapsed());
    }
    println!(
        "wait-workflow: phase switch to exit, median of 20: {:.1} ms",
        median(latencies).as_secs_f64() * 1000.0
    );

    for (mode, poll) in [("watching", "5s"), ("polling (watch refused)", "5s")] {
        let api = KubeApiDouble::start("t");
        if mode.starts_with("polling") {
            api.break_watches();
        }
        api.set_workflow("ns", "wf", json!({ "phase": "Running" }));
        let mut child = start(&api, dir.path(), poll);
        std::thread::sleep(Duration::from_secs(20));
        let requests = api.requests().len();
        api.set_workflow("ns", "wf", json!({ "phase": "Succeeded" }));
        child.wait().unwrap();
        println!("wait-workflow {mode}, --poll-interval {poll}: {requests} API requests in 20 s = {} per minute", requests * 3);
    }
}
