//! admit-sandbox against the real Kubernetes API server (testkit::KubeApiServer), as a service
//! account with only what the template's role grants on ConfigMaps: many requests at once, a race
//! for the last slot, a crashed waiter, refusal, release, dry run, access refused.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::json;
use testkit::{KubeApiServer, KubeApiServerOptions};

fn shared() -> &'static KubeApiServer {
    static SHARED: OnceLock<KubeApiServer> = OnceLock::new();
    SHARED.get_or_init(|| {
        let server = KubeApiServer::start_with(KubeApiServerOptions {
            controller_manager: false,
            ..Default::default()
        });
        server.stop_at_exit();
        server
    })
}

/// A namespace of its own per test, with an account allowed what rbac/workflows.yaml grants the
/// workflows on ConfigMaps (get, create, update), or nothing.
struct Ns {
    name: String,
    kubeconfig: PathBuf,
}

impl Ns {
    fn new(name: &str, granted: bool) -> Ns {
        // What rbac/workflows.yaml grants the workflows' account (sandbox-steps-admission).
        let rules = json!([{"apiGroups": [""], "resources": ["configmaps"],
                            "verbs": ["get", "create", "update"]}]);
        let kubeconfig = shared().account_kubeconfig(name, "workflows", granted.then_some(rules));
        Ns {
            name: name.to_owned(),
            kubeconfig,
        }
    }

    fn command(&self, args: &[&str]) -> (Command, tempfile::TempDir) {
        let outputs = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_admit-sandbox"));
        cmd.env_clear()
            .env("KUBECONFIG", &self.kubeconfig)
            .env("SBX_OUTPUTS_DIR", outputs.path())
            .args(["--namespace", &self.name, "--poll-interval", "200ms"])
            .args(["--lease", "3s"])
            .args(args);
        (cmd, outputs)
    }

    fn run(&self, args: &[&str]) -> (Output, BTreeOutputs) {
        let (mut cmd, outputs) = self.command(args);
        let out = cmd.output().unwrap();
        (out, read_outputs(outputs.path()))
    }

    fn spawn(&self, args: &[&str]) -> (Child, tempfile::TempDir) {
        let (mut cmd, outputs) = self.command(args);
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        (child, outputs)
    }

    /// The ConfigMap's data: (admitted, queued in order).
    fn state(&self) -> (Vec<String>, Vec<String>) {
        let (status, cm) = shared().get(&format!(
            "/api/v1/namespaces/{}/configmaps/sandbox-admission",
            self.name
        ));
        if status == 404 {
            return (vec![], vec![]);
        }
        let data = cm["data"].as_object().cloned().unwrap_or_default();
        let data: std::collections::BTreeMap<String, String> = data
            .into_iter()
            .map(|(k, v)| (k, v.as_str().unwrap().to_owned()))
            .collect();
        let state = admit_sandbox::Admission::from_data(&data);
        (
            state.admitted.keys().cloned().collect(),
            state.queue_order(),
        )
    }

    fn wait_for(&self, what: &str, done: impl Fn(&(Vec<String>, Vec<String>)) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let state = self.state();
            if done(&state) {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: {state:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

type BTreeOutputs = std::collections::BTreeMap<String, String>;

fn read_outputs(dir: &std::path::Path) -> BTreeOutputs {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read_to_string(e.path()).unwrap(),
            )
        })
        .collect()
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// When pull request `pr` asked: `pr` minutes after a fixed time (their order is their number's).
fn requested(pr: u64) -> String {
    let base = humantime::parse_rfc3339("2026-12-01T09:00:00Z").unwrap();
    humantime::format_rfc3339(base + Duration::from_secs(60 * pr)).to_string()
}

fn request(ns: &Ns, pr: u64, cap: usize) -> (Child, tempfile::TempDir) {
    let env = format!("sbx-pr-{pr}");
    ns.spawn(&[
        "--environment",
        &env,
        "--pr-number",
        &pr.to_string(),
        "--requested-at",
        &requested(pr),
        "--max-sandboxes",
        &cap.to_string(),
    ])
}

fn release(ns: &Ns, pr: u64) -> Output {
    ns.run(&["--environment", &format!("sbx-pr-{pr}"), "--release"])
        .0
}

#[test]
fn ten_requests_at_a_cap_of_three_wait_in_the_order_they_asked() {
    let ns = Ns::new("admit-ten", true);
    // Asked in the order 1..=10, arriving all at once in another order.
    let mut waiting: Vec<(u64, Child, tempfile::TempDir)> = [7u64, 3, 10, 1, 5, 9, 2, 8, 4, 6]
        .into_iter()
        .map(|pr| {
            let (child, outputs) = request(&ns, pr, 3);
            (pr, child, outputs)
        })
        .collect();
    ns.wait_for("3 admitted, 7 queued", |(admitted, queued)| {
        admitted.len() == 3 && queued.len() == 7
    });
    let (admitted, queued) = ns.state();
    // Whoever wrote first got the free slots; the rest wait in the order their pull requests asked.
    let mut expected: Vec<String> = (1..=10)
        .map(|pr| format!("sbx-pr-{pr}"))
        .filter(|e| !admitted.contains(e))
        .collect();
    expected.sort_by_key(|e| e[7..].parse::<u64>().unwrap());
    assert_eq!(queued, expected);

    let mut requests = Vec::new();
    let mut finish = |pr: u64, waiting: &mut Vec<(u64, Child, tempfile::TempDir)>| {
        let index = waiting.iter().position(|(p, _, _)| *p == pr).unwrap();
        let (_, child, outputs) = waiting.remove(index);
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{pr}: {}", text(&out));
        let outputs = read_outputs(outputs.path());
        assert_eq!(outputs["admitted"], "true", "{pr}");
        let log = text(&out);
        if let Some(n) = log
            .split(" API requests)")
            .next()
            .and_then(|head| head.rsplit('(').next())
            .and_then(|n| n.parse::<u32>().ok())
        {
            requests.push(n);
        }
    };
    for env in &admitted {
        finish(env[7..].parse().unwrap(), &mut waiting);
    }
    // Each deletion admits the next in line, and only it.
    for next in &expected[..3] {
        let holder = ns.state().0[0].clone();
        let out = release(&ns, holder[7..].parse().unwrap());
        assert!(out.status.success(), "{}", text(&out));
        ns.wait_for(&format!("{next} admitted"), |(admitted, _)| {
            admitted.contains(next)
        });
        finish(next[7..].parse().unwrap(), &mut waiting);
        let (admitted, queued) = ns.state();
        assert_eq!(admitted.len(), 3);
        assert!(!queued.contains(next));
    }
    eprintln!("API requests per admission (reads and writes, with the waiting): {requests:?}");
    for (_, mut child, _) in waiting {
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

#[test]
fn two_racing_for_the_last_slot_never_both_win() {
    let ns = Ns::new("admit-race", true);
    for round in 0..5u64 {
        let (a, b) = (100 + 2 * round, 101 + 2 * round);
        let holder = 90 + round;
        // One slot left of two: the holder, then two requests at once.
        let (child, _outputs) = request(&ns, holder, 2);
        assert!(child.wait_with_output().unwrap().status.success());
        let racers = [request(&ns, a, 2), request(&ns, b, 2)];
        ns.wait_for("one admitted, one queued", |(admitted, queued)| {
            admitted.len() == 2 && queued.len() == 1
        });
        let (admitted, _) = ns.state();
        let (winner, loser) = if admitted.contains(&format!("sbx-pr-{a}")) {
            (a, b)
        } else {
            (b, a)
        };
        assert!(admitted.contains(&format!("sbx-pr-{winner}")));
        assert!(!admitted.contains(&format!("sbx-pr-{loser}")));
        for (mut child, _) in racers {
            let _ = child.kill();
            let _ = child.wait();
        }
        for pr in [holder, winner, loser] {
            assert!(release(&ns, pr).status.success());
        }
        assert_eq!(ns.state(), (vec![], vec![]), "round {round}");
    }
}

#[test]
fn a_crashed_waiter_loses_its_place_after_the_lease() {
    let ns = Ns::new("admit-crash", true);
    let (holder, _o) = request(&ns, 1, 1);
    assert!(holder.wait_with_output().unwrap().status.success());
    // 2 asked first, then crashed (SIGKILL: no clean-up); 3 keeps waiting.
    let (mut crashed, _o2) = request(&ns, 2, 1);
    ns.wait_for("2 queued", |(_, q)| q == &["sbx-pr-2"]);
    let (waiter, _o3) = request(&ns, 3, 1);
    ns.wait_for("3 queued behind 2", |(_, q)| q.len() == 2);
    crashed.kill().unwrap();
    crashed.wait().unwrap();
    let released = Instant::now();
    assert!(release(&ns, 1).status.success());
    let out = waiter.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let took = released.elapsed();
    assert!(
        text(&out).contains("dropped the request of sbx-pr-2"),
        "{}",
        text(&out)
    );
    // Within the lease (3 s) and a poll of it.
    assert!(took < Duration::from_secs(6), "{took:?}");
    assert_eq!(ns.state(), (vec!["sbx-pr-3".to_owned()], vec![]));
}

#[test]
fn refusal_release_dry_run_and_access() {
    let ns = Ns::new("admit-refuse", true);
    let (out, outputs) = ns.run(&["--environment", "sbx-pr-1", "--max-sandboxes", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(outputs["admitted"], "true");
    // Again: admitted before, nothing changes.
    let (out, _) = ns.run(&["--environment", "sbx-pr-1", "--max-sandboxes", "1"]);
    assert!(text(&out).contains("admitted before"), "{}", text(&out));

    let version = |ns: &Ns| {
        shared()
            .get(&format!(
                "/api/v1/namespaces/{}/configmaps/sandbox-admission",
                ns.name
            ))
            .1["metadata"]["resourceVersion"]
            .clone()
    };
    let before = version(&ns);
    let (out, _) = ns.run(&[
        "--environment",
        "sbx-pr-2",
        "--max-sandboxes",
        "1",
        "--when-full",
        "refuse",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("the cap is reached: 1 live sandboxes of 1 (sbx-pr-1)"),
        "{}",
        text(&out)
    );
    // Dry run: says it would wait, adds nothing.
    let (out, outputs) = ns.run(&[
        "--environment",
        "sbx-pr-2",
        "--max-sandboxes",
        "1",
        "--dry-run",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("would wait"), "{}", text(&out));
    assert_eq!(outputs["position"], "1");
    assert_eq!(version(&ns), before, "refusal and dry run change nothing");

    // Release, twice; the second finds nothing.
    let (out, outputs) = ns.run(&["--environment", "sbx-pr-1", "--release"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(outputs["released"], "true");
    let (out, outputs) = ns.run(&["--environment", "sbx-pr-1", "--release"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(outputs["released"], "false");

    // Bad input: exit 2 before any request.
    for bad in [
        "../x",
        ";rm -rf /",
        "Sbx-PR-1",
        &"a".repeat(200),
        "sbx\u{202e}1",
    ] {
        let (out, _) = ns.run(&["--environment", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", text(&out));
    }
    let (out, _) = ns.run(&["--environment", "sbx-pr-3", "--requested-at", "yesterday"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // No RBAC on ConfigMaps: exit 3 naming what to grant.
    let bare = Ns::new("admit-bare", false);
    let (out, _) = bare.run(&["--environment", "sbx-pr-1"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("configmaps"), "{}", text(&out));
}

/// create-sandbox's loop: each call ends when the position changes, the card shows it, the next
/// call waits from there.
#[test]
fn with_report_position_each_move_of_the_queue_ends_the_call() {
    let ns = Ns::new("admit-report", true);
    for pr in [1u64, 2] {
        let (child, _o) = request(&ns, pr, 2);
        assert!(child.wait_with_output().unwrap().status.success());
    }
    let call = |pr: u64, shown: usize| {
        ns.run(&[
            "--environment",
            &format!("sbx-pr-{pr}"),
            "--requested-at",
            &requested(pr),
            "--max-sandboxes",
            "2",
            "--report-position",
            &shown.to_string(),
        ])
    };
    let (out, first) = call(3, 0);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        (
            first["admitted"].as_str(),
            first["position"].as_str(),
            first["queued"].as_str()
        ),
        ("false", "1", "1")
    );
    let (out, second) = call(4, 0);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        (second["position"].as_str(), second["queued"].as_str()),
        ("2", "2")
    );
    // 4 waits at position 2; a release moves it to 1 (3 is admitted): the call ends.
    let (mut waiting, outputs) = ns.spawn(&[
        "--environment",
        "sbx-pr-4",
        "--requested-at",
        &requested(4),
        "--max-sandboxes",
        "2",
        "--report-position",
        "2",
    ]);
    std::thread::sleep(Duration::from_millis(600));
    assert!(waiting.try_wait().unwrap().is_none(), "still at position 2");
    assert!(release(&ns, 1).status.success());
    // 3 (first in line) takes the slot on its next call; 4 is then first.
    let (out, third) = call(3, 1);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(third["admitted"], "true");
    let status = waiting.wait().unwrap();
    assert!(status.success());
    let moved = read_outputs(outputs.path());
    assert_eq!(
        (moved["admitted"].as_str(), moved["position"].as_str()),
        ("false", "1")
    );
    assert_eq!(
        ns.state(),
        (
            vec!["sbx-pr-2".to_owned(), "sbx-pr-3".to_owned()],
            vec!["sbx-pr-4".to_owned()]
        )
    );
}

/// A sandbox put to sleep frees its slot: the one waiting behind it is admitted; waking the
/// sleeper is a request that waits at the cap, and admits it once a slot is free.
#[test]
fn sleeping_frees_the_slot_and_waking_waits_for_one() {
    let ns = Ns::new("admit-sleep", true);
    let (out, _) = ns.run(&[
        "--environment",
        "sbx-pr-1",
        "--pr-number",
        "1",
        "--max-sandboxes",
        "1",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let (mut waiter, waiter_outputs) = request(&ns, 2, 1);
    ns.wait_for("2 queued", |(_, queued)| queued == &["sbx-pr-2"]);

    let (out, outputs) = ns.run(&["--environment", "sbx-pr-1", "--sleep"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(outputs["asleep"], "true");
    assert!(
        text(&out).contains("asleep, its slot freed"),
        "{}",
        text(&out)
    );
    let status = waiter.wait().unwrap();
    assert!(status.success());
    assert_eq!(read_outputs(waiter_outputs.path())["admitted"], "true");
    ns.wait_for("2 admitted", |(admitted, _)| admitted == &["sbx-pr-2"]);

    // Asleep again: nothing written.
    let (out, _) = ns.run(&["--environment", "sbx-pr-1", "--sleep"]);
    assert!(
        text(&out).contains("recorded asleep already"),
        "{}",
        text(&out)
    );

    // Waking at the cap waits; 2's deletion admits it, and it is no longer asleep.
    let (mut waker, waker_outputs) = ns.spawn(&[
        "--environment",
        "sbx-pr-1",
        "--pr-number",
        "1",
        "--max-sandboxes",
        "1",
    ]);
    ns.wait_for("1 queued", |(_, queued)| queued == &["sbx-pr-1"]);
    assert!(release(&ns, 2).status.success());
    assert!(waker.wait().unwrap().success());
    assert_eq!(read_outputs(waker_outputs.path())["admitted"], "true");
    let (_, cm) = shared().get(&format!(
        "/api/v1/namespaces/{}/configmaps/sandbox-admission",
        ns.name
    ));
    let keys: Vec<&String> = cm["data"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["admitted.sbx-pr-1"]);
}

/// --when-full sleep-idlest: at the cap, the live sandbox asked for least recently (a push asks
/// again) is recorded asleep and its slot taken, in one compare-and-swap; the outputs name it
/// for sleep-sandbox. A dry run says which, and writes nothing.
#[test]
fn sleep_idlest_takes_the_slot_of_the_least_recently_used() {
    let ns = Ns::new("admit-sleep-idlest", true);
    for pr in [1, 2] {
        let (out, _) = ns.run(&[
            "--environment",
            &format!("sbx-pr-{pr}"),
            "--pr-number",
            &pr.to_string(),
            "--max-sandboxes",
            "2",
        ]);
        assert!(out.status.success(), "{}", text(&out));
    }
    // A push to 1 (update-sandbox asks again): 2 is now the idlest.
    std::thread::sleep(Duration::from_millis(1100));
    let (out, _) = ns.run(&["--environment", "sbx-pr-1", "--max-sandboxes", "2"]);
    assert!(text(&out).contains("admitted before"), "{}", text(&out));
    let asks = |dry: bool| {
        let mut args = vec![
            "--environment",
            "sbx-pr-3",
            "--pr-number",
            "3",
            "--max-sandboxes",
            "2",
            "--when-full",
            "sleep-idlest",
        ];
        if dry {
            args.push("--dry-run");
        }
        ns.run(&args)
    };
    let (out, outputs) = asks(true);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("sbx-pr-2 would be put to sleep to make room for sbx-pr-3"),
        "{}",
        text(&out)
    );
    assert_eq!(outputs["put-to-sleep"], "");
    assert_eq!(
        ns.state().0,
        ["sbx-pr-1", "sbx-pr-2"],
        "a dry run writes nothing"
    );
    let (out, outputs) = asks(false);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(outputs["admitted"], "true");
    assert_eq!(outputs["put-to-sleep"], "sbx-pr-2");
    assert_eq!(outputs["put-to-sleep-pr"], "2");
    let (_, cm) = shared().get(&format!(
        "/api/v1/namespaces/{}/configmaps/sandbox-admission",
        ns.name
    ));
    let keys: Vec<&String> = cm["data"].as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["admitted.sbx-pr-1", "admitted.sbx-pr-3", "asleep.sbx-pr-2"]
    );
}
